"""Read Ray's Prometheus export (the node's metrics port) without a Prometheus server."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(metrics_url: str) -> dict[str, float]:
    """Every sample summed over its labels, by sample name (e.g. ray_sentiment_cache_hits_total)."""
    text = httpx.get(metrics_url, timeout=30).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def sample_names(metrics_url: str) -> set[str]:
    return set(scrape(metrics_url))
