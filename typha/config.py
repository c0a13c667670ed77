"""Typha configuration from the environment (``TYPHA_<UPSTREAM NAME>``, upper-cased)."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping


@dataclass
class TyphaConfig:
    server_host: str = "0.0.0.0"  # TYPHA_SERVERHOST (not upstream: bind address)
    server_port: int = 5473  # TYPHA_SERVERPORT
    max_connections_upper_limit: int = 10000  # TYPHA_MAXCONNECTIONSUPPERLIMIT
    max_connections_lower_limit: int = 400  # TYPHA_MAXCONNECTIONSLOWERLIMIT
    connection_rebalancing_mode: str = "none"  # TYPHA_CONNECTIONREBALANCINGMODE: none | kubernetes
    connection_drop_interval_secs: float = 1.0  # TYPHA_CONNECTIONDROPINTERVALSECS: between shed connections
    connection_target: int = 0  # TYPHA_CONNECTIONTARGET (pycalico): fixed shedding target (0 = limits)
    k8s_service_poll_interval_secs: float = 30.0  # TYPHA_K8SSERVICEPOLLINTERVALSECS
    k8s_namespace: str = "kube-system"  # TYPHA_K8SNAMESPACE
    k8s_service_name: str = "calico-typha"  # TYPHA_K8SSERVICENAME
    k8s_port_name: str = "calico-typha"  # TYPHA_K8SPORTNAME
    ping_interval: float = 10.0  # TYPHA_PINGINTERVAL
    pong_timeout: float = 60.0  # TYPHA_PONGTIMEOUT
    handshake_timeout: float = 10.0  # TYPHA_HANDSHAKETIMEOUT
    write_timeout: float = 120.0  # TYPHA_SERVERWRITETIMEOUT
    client_queue_size: int = 1000  # frames queued per client before it is dropped
    max_frame_size: int = 16 * 1024 * 1024
    ca_file: str = ""  # TYPHA_CAFILE
    server_cert_file: str = ""  # TYPHA_SERVERCERTFILE
    server_key_file: str = ""  # TYPHA_SERVERKEYFILE
    client_cn: str = ""  # TYPHA_CLIENTCN
    client_uri_san: str = ""  # TYPHA_CLIENTURISAN
    health_enabled: bool = True  # TYPHA_HEALTHENABLED
    health_host: str = "0.0.0.0"  # TYPHA_HEALTHHOST
    health_port: int = 9098  # TYPHA_HEALTHPORT
    prometheus_metrics_enabled: bool = True  # TYPHA_PROMETHEUSMETRICSENABLED
    prometheus_metrics_host: str = "0.0.0.0"  # TYPHA_PROMETHEUSMETRICSHOST
    prometheus_metrics_port: int = 9093  # TYPHA_PROMETHEUSMETRICSPORT
    log_severity_screen: str = "INFO"  # TYPHA_LOGSEVERITYSCREEN
    shutdown_timeout_secs: float = 300.0  # TYPHA_SHUTDOWNTIMEOUTSECS: connection drain on shutdown

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TyphaConfig":
        env = os.environ if env is None else env
        cfg = cls()
        for f in fields(cls):
            name = "TYPHA_" + f.name.replace("_", "").upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            if f.type in ("bool", bool):
                value: object = raw.strip().lower() in ("1", "true", "yes", "on")
            elif f.type in ("int", int):
                value = int(raw)
            elif f.type in ("float", float):
                value = float(raw)
            else:
                value = raw
            setattr(cfg, f.name, value)
        cfg.connection_rebalancing_mode = cfg.connection_rebalancing_mode.lower()
        if cfg.connection_rebalancing_mode not in ("none", "kubernetes"):
            raise ValueError(f"TYPHA_CONNECTIONREBALANCINGMODE must be none or kubernetes, "
                             f"not {cfg.connection_rebalancing_mode!r}")
        if (cfg.server_cert_file or cfg.server_key_file) and not (cfg.server_cert_file and cfg.server_key_file and cfg.ca_file):
            raise ValueError("TLS needs TYPHA_SERVERCERTFILE, TYPHA_SERVERKEYFILE and TYPHA_CAFILE")
        return cfg

    @property
    def tls_enabled(self) -> bool:
        return bool(self.server_cert_file)


def rebalance_target(lower: int, upper: int, syncer_types: int, nodes: int, typhas: int) -> int:
    """Upstream's per-Typha connection target for kubernetes rebalancing mode.

    Each node runs one client per syncer type; the nodes are shared by all
    Typhas but one (so one can be lost, e.g. in a rolling update, without
    anybody having to move), plus 20 % headroom; clamped to [lower, upper].
    A lone Typha takes everything up to the upper limit."""
    if typhas <= 1:
        return upper
    target = syncer_types * (1 + nodes * 120 // (typhas - 1) // 100)
    return min(upper, max(lower, target))
