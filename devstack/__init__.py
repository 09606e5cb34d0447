"""The local stack that `make run`, `make test`, `make bench` and `make e2e` start.

Development tooling, not tests and not the app: throwaway PostgreSQL and Redis servers
(`servers`), and for the end-to-end suite a private Docker engine with a local registry
(`docker_engine`) and the stand-in base images built from Debian packages (`standin_images`);
nginx run from the project's templates (`nginx`), a real Prometheus evaluating the project's
rules (`prometheus`, for `make slo-plot`), and an OTLP/HTTP traces receiver (`otlp_receiver`).
"""
