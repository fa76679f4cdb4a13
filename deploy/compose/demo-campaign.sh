#!/bin/sh
# The demo campaign of deploy/compose.yaml, run once by its `demo-campaign` service: a synthetic
# national audience, the vaccination advisory (Zalo first, SMS for whoever Zalo cannot reach),
# created by one person, approved by another, launched onto the cluster's queues; the worker
# containers send it through the simulated carriers.
set -eu
PEOPLE="${DEMO_PEOPLE:-20000}"
WORK="${LOA_DATA_DIR:-/home/loa/data}/demo"
mkdir -p "$WORK"
python - "$PEOPLE" "$WORK" <<'PY'
import sys
from pathlib import Path

from loa.demo.config import advisory_plan
from loa.demo.people import write_audience
from loa.demo.simulators import zalo_options
from loa.sim.http import HttpSimulator

people, work = int(sys.argv[1]), Path(sys.argv[2])
has_zalo = HttpSimulator(zalo_options(2026, 0)).has_zalo  # the draw of the zalo service's seed
write_audience(work / "audience.csv", people, has_zalo, 2026)
(work / "advisory.plan.toml").write_text(advisory_plan(), encoding="utf-8")
PY
run=$(date +%s)
operator=$(loa api token create --name "demo-operator-$run" --role operator --person "Demo operator")
approver=$(loa api token create --name "demo-approver-$run" --role approver --person "Demo approver")
campaign=$(loa campaign create "$WORK/advisory.plan.toml" --audience "$WORK/audience.csv" --token "$operator")
loa campaign approve "$campaign" --token "$approver"
loa campaign launch "$campaign" --token "$operator"
echo "campaign $campaign launched: docker compose exec loa-api loa campaign status $campaign"
