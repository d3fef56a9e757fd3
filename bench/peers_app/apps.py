from django.apps import AppConfig


class PeersAppConfig(AppConfig):
    # An app so that Procrastinate finds the task in its tasks module.
    name = "bench.peers_app"
    label = "bench_peers"
