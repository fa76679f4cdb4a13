# One image for every loa process (worker, api, server, sim, backup), multi-stage: the
# runtime lock's packages (each checked against its hash) and loa in a virtual environment,
# copied into a slim runtime that runs as non-root.
FROM python:3.11-slim AS build
RUN python -m venv /opt/loa
WORKDIR /src
COPY requirements/runtime.txt ./requirements/
RUN /opt/loa/bin/pip install --no-cache-dir --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/loa/bin/pip install --no-cache-dir --no-deps --no-build-isolation .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 loa
COPY --from=build /opt/loa /opt/loa
USER loa
WORKDIR /home/loa
# made here, owned by loa: a named volume mounted on them starts with that owner
RUN mkdir -p /home/loa/data /home/loa/backups
ENV PATH=/opt/loa/bin:$PATH \
    LOA_DATA_DIR=/home/loa/data \
    LOA_WORKER__METRICS_HOST=0.0.0.0 \
    LOA_CONFIG=/etc/loa/loa.toml
VOLUME ["/home/loa/data"]
EXPOSE 9750
STOPSIGNAL SIGTERM
ENTRYPOINT ["loa"]
CMD ["worker"]
