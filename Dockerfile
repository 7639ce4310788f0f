# The patchbay image: the package and the example connector, run as a non-root user.
#   docker build -t patchbay .
#   docker run --rm -e PATCHBAY_DATABASE_URL=... -e PATCHBAY_MASTER_KEYS=... patchbay run
# Two stages: wheels are built with the build tools, the runtime stage only installs them.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY queue queue
COPY secrets secrets
COPY connectors connectors
COPY runtime runtime
COPY migrations migrations
COPY examples/contacts examples/contacts
RUN pip wheel --no-cache-dir --wheel-dir /wheels . ./examples/contacts

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATCHBAY_HOME=/home/patchbay/.patchbay
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin patchbay
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER patchbay
WORKDIR /home/patchbay
ENTRYPOINT ["patchbay"]
CMD ["run"]
