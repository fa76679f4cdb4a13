# One image for every loa process (worker, api, server, sim, backup), multi-stage: build a
# wheel, install it into a slim runtime as non-root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 loa
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER loa
WORKDIR /home/loa
# made here, owned by loa: a named volume mounted on them starts with that owner
RUN mkdir -p /home/loa/data /home/loa/backups
ENV LOA_DATA_DIR=/home/loa/data \
    LOA_WORKER__METRICS_HOST=0.0.0.0 \
    LOA_CONFIG=/etc/loa/loa.toml
VOLUME ["/home/loa/data"]
EXPOSE 9750
STOPSIGNAL SIGTERM
ENTRYPOINT ["loa"]
CMD ["worker"]
