# syntax=docker/dockerfile:1
#
# adacompress: the edge upload proxy, in a small non-root image.
#
#   docker build -t adacompress .
#   docker run --rm -p 8080:8080 -p 9090:9090 -v adacompress-state:/var/lib/adacompress adacompress
#
# Cold build ~12–15 min on 2 cores (tract and mozjpeg dominate); the dependency layer is
# cached, so changing only src/ rebuilds just this crate. See deploy/README.md.

############################ builder ############################
FROM rust:1.95-slim-bookworm AS builder

# nasm gives mozjpeg its SIMD code (2–7x faster JPEG). gcc comes with the image (mozjpeg,
# SQLite and ring are C); no OpenSSL, cmake or pkg-config needed (rustls, bundled SQLite).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nasm \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependency layer: build every dependency against placeholder sources, so this layer is
# only rebuilt when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# The crate itself. The same build command as README.md / scripts/quickstart.sh. The
# symbol table is stripped (41 -> 33 MB); panics still print their message.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && strip -o /adacompress target/release/adacompress

############################ runtime ############################
FROM debian:bookworm-slim

# ca-certificates for anything that reads the system trust store (rustls carries its own
# roots); nothing else: the binary needs only glibc and libgcc.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 adacompress \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/adacompress --no-create-home \
      --shell /usr/sbin/nologin adacompress \
 && mkdir -p /var/lib/adacompress \
 && chown 10001:10001 /var/lib/adacompress

COPY --from=builder /adacompress /usr/local/bin/adacompress
# agent-calibrated.json (and the paper agent agent.json), efficientnet-lite0.onnx, imagenet_classes.txt and their licences.
COPY models/ /usr/share/adacompress/models/
COPY config/adacompress.toml /etc/adacompress/adacompress.toml

# Relative paths in the config (models/…) resolve against the shipped files.
WORKDIR /usr/share/adacompress

# Learned state: state.sqlite (the live pair). Mount a volume here to keep
# what the proxy learns across restarts.
VOLUME /var/lib/adacompress

# Listen on all interfaces inside the container; the config file keeps loopback defaults.
ENV ADACOMPRESS_PROXY__LISTEN=0.0.0.0:8080 \
    ADACOMPRESS_PROXY__ADMIN_LISTEN=0.0.0.0:9090 \
    ADACOMPRESS_STATE__DIR=/var/lib/adacompress \
    ADACOMPRESS_AGENT__CHECKPOINT=/usr/share/adacompress/models/agent-calibrated.json

# 8080: the proxy (point the cloud SDK's base URL here). 9090: admin (/metrics, /healthz,
# /readyz, /agent); do not expose it publicly.
EXPOSE 8080 9090

USER 10001:10001

# The binary checks itself: slim images have no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["adacompress", "healthcheck", "--url", "http://127.0.0.1:9090/healthz"]

ENTRYPOINT ["adacompress"]
CMD ["serve", "--config", "/etc/adacompress/adacompress.toml"]
