# Synod in an image FROM scratch: one static binary, no shell, no libc, no base image to
# pull. Build it with `docker/build.sh`, which compiles the static binary first and stages it
# in target/docker (the only path .dockerignore lets into the build context).
#
# A one-node cluster (docker-compose.yml runs three):
#   docker run -d -p 127.0.0.1:7001:7000 -v synod-data:/data synod \
#       server --node-id 1 --members 1=localhost:7100/localhost:7000
FROM scratch

COPY target/docker/synod /synod
# An empty /data owned by the unprivileged user, so that a fresh named volume mounted there
# starts out writable by it (Docker copies the directory's owner into a new volume).
COPY --chown=65532:65532 target/docker/data /data

# The defaults a container wants: bind every interface (the members list advertises the
# service's hostname), keep the data in the volume, log without colour escapes.
ENV SYNOD_DATA_DIR=/data \
    SYNOD_LISTEN_HTTP=0.0.0.0:7000 \
    SYNOD_LISTEN_PEER=0.0.0.0:7100 \
    NO_COLOR=1

# There is no /etc/passwd in scratch, hence numeric ids (65532 is the customary "nonroot").
USER 65532:65532
VOLUME /data
# 7000: the HTTP API (clients, /readyz, /metrics). 7100: peers (Paxos messages).
EXPOSE 7000 7100

# No curl in scratch: the binary checks itself. `synod status` exits 0 when the node answers.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/synod", "status", "--endpoints", "http://127.0.0.1:7000"]

# `synod server` handles SIGTERM (a clean shutdown), so it can be PID 1 without an init.
ENTRYPOINT ["/synod"]
CMD ["server"]
