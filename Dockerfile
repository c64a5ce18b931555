# tfo worker / flower / CLI image. Build: docker build -t tfo .

# The wheel, with the compiled tfvars reader (setup.py): a compiler here, none in the image.
FROM python:3.11-slim AS wheel
# DL3008: as below, the base image's release fixes these versions up to security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY cli ./cli
# DL3013: the repository's own package, built, not fetched.
# hadolint ignore=DL3013
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TERRAFORM_VERSION=1.9.8
# DL3008: the base image's Debian release already fixes these packages' versions up to security
# updates; pinning exact revisions would only make the build fail on the next security update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git unzip \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /tmp/terraform
RUN curl -fsSLO "https://releases.hashicorp.com/terraform/${TERRAFORM_VERSION}/terraform_${TERRAFORM_VERSION}_linux_amd64.zip" \
 && curl -fsSLO "https://releases.hashicorp.com/terraform/${TERRAFORM_VERSION}/terraform_${TERRAFORM_VERSION}_SHA256SUMS" \
 && grep "terraform_${TERRAFORM_VERSION}_linux_amd64.zip" "terraform_${TERRAFORM_VERSION}_SHA256SUMS" | sha256sum -c - \
 && unzip -o "terraform_${TERRAFORM_VERSION}_linux_amd64.zip" -d /usr/local/bin \
 && rm -f terraform_*

COPY --from=wheel /wheels /tmp/wheels
# DL3013: this installs the repository's own package; its dependencies' versions are bounded in
# pyproject.toml, the one place they are kept.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "$(find /tmp/wheels -name 'tfo-*.whl')[flower]" \
 && rm -rf /tmp/wheels

RUN useradd --create-home --uid 10001 tfo && mkdir -p /var/lib/tfo && chown 10001 /var/lib/tfo
USER 10001
WORKDIR /var/lib/tfo
ENV HOME=/var/lib/tfo
# Per-host provider cache; `terraform init` is serialised per cache directory by tfo.
ENV TFO_PLUGIN_CACHE_DIR=/var/lib/tfo/plugin-cache
ENTRYPOINT ["tfo"]
CMD ["--help"]
