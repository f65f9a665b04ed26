#!/usr/bin/env python3
"""Fetches a /metrics URL and parses it with the official Prometheus Python client's
OpenMetrics parser; prints every sample as JSON: [name, labels, value, family type]."""

import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

with urllib.request.urlopen(sys.argv[1], timeout=30) as response:
    content_type = response.headers.get("content-type", "")
    text = response.read().decode("utf-8")
if not content_type.startswith("application/openmetrics-text"):
    sys.exit(f"content type {content_type!r} is not OpenMetrics")
samples = []
for family in text_string_to_metric_families(text):
    for sample in family.samples:
        samples.append([sample.name, sample.labels, sample.value, family.type])
print(json.dumps(samples))
