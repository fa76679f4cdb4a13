# Multi-stage image for loa workers: the runtime lock's packages (each checked against its hash)
# and loa in a virtual environment, copied into a slim runtime that runs as non-root.
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
ENV PATH=/opt/loa/bin:$PATH \
    LOA_DATA_DIR=/home/loa/data \
    LOA_WORKER__METRICS_HOST=0.0.0.0 \
    LOA_CONFIG=/etc/loa/loa.toml
VOLUME ["/home/loa/data"]
EXPOSE 9750
STOPSIGNAL SIGTERM
ENTRYPOINT ["loa"]
CMD ["worker"]
