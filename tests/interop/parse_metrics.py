#!/usr/bin/env python3
"""Parse a Prometheus exposition from stdin with the reference Python parser (prometheus_client)
and print every sample as JSON: {"name{label=value,...}": value}. Usage:
    parse_metrics.py text|openmetrics < exposition
Used by tests/metrics.rs, so the server's output is read by a real exposition-format parser."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

fmt = sys.argv[1]
parse = parse_openmetrics if fmt == "openmetrics" else parse_text
samples = {}
types = {}
for family in parse(sys.stdin.read()):
    types[family.name] = family.type
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
json.dump({"samples": samples, "types": types}, sys.stdout)
