"""CAP 1.2 in: alerts checked, mapped to campaigns, updated and cancelled."""
