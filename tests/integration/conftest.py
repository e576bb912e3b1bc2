"""Shared real Ray Serve instances for the integration tests.

An instance (see `serve_stack.py`) is a private single-node Ray cluster on free ports,
started with `ray start --head --block` in a subprocess this test process owns, running the
`sentiment` application deployed by the real `serve deploy` CLI from the real
`serve_config.yaml`, on its own freshly migrated database. Starting one costs ~40 s on two
cores, so start as few as the behaviour needs:

Fixtures
  serve_instance        session: the shared default instance (serve_config.yaml as shipped,
                        temporary SQLite). Use it unless a test changes the deployment.
  mysql_serve_instance  session: the same on a new MariaDB database, dropped at the end.
                        Skips when MariaDB is unreachable; under CI that is a failure.
  start_serve           the factory, for a test that needs its own instance:
                            with start_serve(deployments={"SentimentModel": {...}},
                                             env={...}, database="mysql") as instance:
                        deployment overrides are deep-merged into serve_config.yaml's entries.

A ServeInstance gives `url` (Serve's HTTP base URL), `dashboard_url` (for `serve status -a`),
`gcs_address`, `database_url`, `config` (the dict deployed), `deploy(config)` (re-deploy and
wait), `driver()` (connect this process as a Ray driver: `serve.status()`, handles),
`model_replica_count()`, `model_stats()` (per-replica batch sizes, cache, model version) and
`client()` (an httpx.AsyncClient). `signup_and_login(client)` makes a user through the API.
Teardown ends only the instance's own process tree and drops its database; never `ray stop`.
"""

# The fixtures themselves live in serve_fixtures.py, a plugin registered by tests/conftest.py,
# so that the web tests share the same session instance.
