# The one image every meterflow Deployment runs; the container's args pick the command.
# (Not built in CI here: the build machines have no Docker engine.)
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY libs ./libs
COPY services ./services
RUN pip install --no-cache-dir -c constraints.txt . && useradd --uid 10001 meterflow
USER 10001
ENTRYPOINT ["meterflow"]
