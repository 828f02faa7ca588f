# osbuilder's builder image: Debian 12, the Debian tools osbuilder drives (the list in
# setup.sh, printed by `./setup.sh --packages`), osbuilder installed from its wheel, and an
# unprivileged user with subordinate id ranges, which builds without root. The README's
# recipe (the one the tests run):
#
#   podman build -t osbuilder .
#   mkdir -p out && chmod 777 out && cp kata-agent out/
#   podman run --rm --cap-add SYS_ADMIN -v "$PWD/out:/out" osbuilder build --distro debian --init agent --agent /out/kata-agent --format initrd,image -o /out/guest
#
# BASE: any Debian 12 image: a registry's debian:bookworm-slim, or, with no registry
# reachable, one made from Debian's mirror:
#
#   mmdebstrap --variant=apt --include=ca-certificates bookworm debian-bookworm.tar http://deb.debian.org/debian
#   podman import debian-bookworm.tar localhost/debian:bookworm
#   podman build --build-arg BASE=localhost/debian:bookworm -t osbuilder .
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BASE} AS wheel
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends python3-pip python3-setuptools python3-wheel \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md /src/
COPY osbuilder /src/osbuilder
COPY templates /src/templates
COPY distros /src/distros
COPY schemas /src/schemas
RUN python3 -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src

FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
COPY setup.sh /usr/local/share/osbuilder/setup.sh
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends python3-venv \
       $(bash /usr/local/share/osbuilder/setup.sh --packages) \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /wheels /wheels
RUN python3 -m venv /opt/osbuilder \
    && /opt/osbuilder/bin/pip install --no-cache-dir /wheels/*.whl \
    && ln -s /opt/osbuilder/bin/osbuilder /usr/local/bin/osbuilder \
    && rm -rf /wheels
# The builder: subordinate ids for mmdebstrap's unshare mode, its cache in its home.
RUN useradd --create-home --shell /bin/bash builder \
    && echo "builder:100000:65536" > /etc/subuid \
    && echo "builder:100000:65536" > /etc/subgid \
    && mkdir /out && chown builder:builder /out
USER builder
WORKDIR /home/builder
ENTRYPOINT ["osbuilder"]
CMD ["--help"]
