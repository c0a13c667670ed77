"""FelixConfiguration (``default``, ``node.<name>``).

The spec has ~170 optional parameters, declared from a table of
(JSON name, type) below; attribute names are the snake_case of the JSON
names (``iptablesRefreshInterval`` -> ``iptables_refresh_interval``).  No
defaults are filled in: Felix's config loader applies its own, with the
precedence env > config file > ``node.<name>`` > ``default`` > built-in.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import AfterValidator, Field, ValidationInfo, create_model, field_validator

from datastore.models.common import (
    CIDR,
    CalicoModel,
    CIDRv4,
    Duration,
    IPv4Addr,
    IPv6Addr,
    Port,
    Resource,
    Uint16,
    Uint32,
    check_cidr,
    check_dns_label,
    info_get,
)


def _ci_enum(*choices: str) -> Any:
    """A string matching one of ``choices`` case-insensitively (or empty), as
    upstream's ``^(?i)(A|B)?$`` patterns; the text is kept as given."""
    rx = re.compile("^(?i:" + "|".join(choices) + ")?$")

    def check(v: str) -> str:
        if not rx.match(v):
            raise ValueError(f"invalid value {v!r}: one of {', '.join(choices)}")
        return v

    return Annotated[str, AfterValidator(check)]


def _pattern(rx: str, what: str) -> Any:
    compiled = re.compile(rx)

    def check(v: str) -> str:
        if not compiled.match(v):
            raise ValueError(f"invalid {what} {v!r}")
        return v

    return Annotated[str, AfterValidator(check)]


LogLevel = _ci_enum("Trace", "Debug", "Info", "Warning", "Error", "Fatal")
AcceptReturn = _ci_enum("Accept", "Return")
DropReject = _ci_enum("Drop", "Reject")
EnabledDisabled = Literal["Enabled", "Disabled"]
ConntrackTimeout = _pattern(r"^(([0-9]*(\.[0-9]*)?(ms|s|h|m|us)+)+|Auto)$", "conntrack timeout")
NonNegInt = Annotated[int, Field(ge=0)]


class ProtoPort(CalicoModel):
    protocol: Optional[Literal["TCP", "UDP", "SCTP"]] = None
    port: Uint16
    net: Optional[str] = None

    @field_validator("net")
    @classmethod
    def _net(cls, v: Optional[str]) -> Optional[str]:
        if v:
            check_cidr(v)
        return v


class RouteTableRange(CalicoModel):
    min: int
    max: int = Field(validate_default=True)

    @field_validator("max")
    @classmethod
    def _range(cls, v: int, info: ValidationInfo) -> int:
        lo = info_get(info, "min")
        if lo is not None and not (1 <= lo <= v <= 250):
            raise ValueError("routeTableRange must be a range of route table indices within 1..250")
        return v


class RouteTableIDRange(CalicoModel):
    min: int = Field(ge=1)
    max: Uint32

    @field_validator("max")
    @classmethod
    def _order(cls, v: int, info: ValidationInfo) -> int:
        lo = info_get(info, "min")
        if lo is not None and lo > v:
            raise ValueError("min value cannot be greater than max value")
        return v


class HealthTimeoutOverride(CalicoModel):
    name: str
    timeout: Duration


class BPFConntrackTimeouts(CalicoModel):
    creation_grace_period: Optional[ConntrackTimeout] = Field(None, alias="creationGracePeriod")
    tcp_syn_sent: Optional[ConntrackTimeout] = Field(None, alias="tcpSynSent")
    tcp_established: Optional[ConntrackTimeout] = Field(None, alias="tcpEstablished")
    tcp_fins_seen: Optional[ConntrackTimeout] = Field(None, alias="tcpFinsSeen")
    tcp_reset_seen: Optional[ConntrackTimeout] = Field(None, alias="tcpResetSeen")
    udp_timeout: Optional[ConntrackTimeout] = Field(None, alias="udpTimeout")
    generic_timeout: Optional[ConntrackTimeout] = Field(None, alias="genericTimeout")
    icmp_timeout: Optional[ConntrackTimeout] = Field(None, alias="icmpTimeout")


class _FelixSpecBase(CalicoModel):
    """The structured / cross-checked parameters; the flat ones are generated."""

    route_table_range: Optional[RouteTableRange] = Field(None, alias="routeTableRange")
    route_table_ranges: Optional[list[RouteTableIDRange]] = Field(None, alias="routeTableRanges")
    kube_node_port_ranges: Optional[list[Port]] = Field(None, alias="kubeNodePortRanges")
    failsafe_inbound_host_ports: Optional[list[ProtoPort]] = Field(None, alias="failsafeInboundHostPorts")
    failsafe_outbound_host_ports: Optional[list[ProtoPort]] = Field(None, alias="failsafeOutboundHostPorts")
    health_timeout_overrides: Optional[list[HealthTimeoutOverride]] = Field(None, alias="healthTimeoutOverrides")
    bpf_conntrack_timeouts: Optional[BPFConntrackTimeouts] = Field(None, alias="bpfConntrackTimeouts")
    external_nodes_list: Optional[list[CIDRv4]] = Field(None, alias="externalNodesList")
    openstack_region: Optional[str] = Field(None, alias="openstackRegion")

    @field_validator("route_table_ranges")
    @classmethod
    def _one_range_field(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and info_get(info, "route_table_range") is not None:
            raise ValueError("routeTableRanges cannot be set together with routeTableRange")
        return v

    @field_validator("kube_node_port_ranges")
    @classmethod
    def _node_ports(cls, v: Optional[list[Any]]) -> Optional[list[Any]]:
        if v is not None:
            if len(v) > 7:
                raise ValueError("node port ranges list is too long (max 7)")
            if any(isinstance(p, str) and not p[0].isdigit() for p in v):
                raise ValueError("node port ranges must not contain named ports")
        return v

    @field_validator("openstack_region")
    @classmethod
    def _region(cls, v: Optional[str]) -> Optional[str]:
        # Used in a namespace name "openstack-region-<region>" (max 63 characters).
        return check_dns_label(v, 63 - len("openstack-region-")) if v else v


# (JSON name, type).  Every field is optional.
_FLAT_FIELDS: list[tuple[str, Any]] = [
    ("allowIPIPPacketsFromWorkloads", bool),
    ("allowVXLANPacketsFromWorkloads", bool),
    ("awsSrcDstCheck", Literal["DoNothing", "Enable", "Disable"]),
    ("bpfAttachType", Literal["TC", "TCX"]),
    ("bpfCTLBLogFilter", str),
    ("bpfConnectTimeLoadBalancing", Literal["TCP", "Enabled", "Disabled"]),
    ("bpfConnectTimeLoadBalancingEnabled", bool),
    ("bpfConntrackLogLevel", Literal["Off", "Debug"]),
    ("bpfConntrackMode", Literal["Auto", "Userspace", "BPFProgram"]),
    ("bpfDSROptoutCIDRs", list[CIDR]),
    ("bpfDataIfacePattern", str),
    ("bpfDisableGROForIfaces", str),
    ("bpfDisableUnprivileged", bool),
    ("bpfEnabled", bool),
    ("bpfEnforceRPF", _ci_enum("Disabled", "Strict", "Loose")),
    ("bpfExcludeCIDRsFromNAT", list[CIDR]),
    ("bpfExportBufferSizeMB", NonNegInt),
    ("bpfExtToServiceConnmark", NonNegInt),
    ("bpfExternalServiceMode", _ci_enum("Tunnel", "DSR")),
    ("bpfForceTrackPacketsFromIfaces", list[str]),
    ("bpfHostConntrackBypass", bool),
    ("bpfHostNetworkedNATWithoutCTLB", EnabledDisabled),
    ("bpfJITHardening", Literal["Auto", "Strict"]),
    ("bpfKubeProxyEndpointSlicesEnabled", bool),  # deprecated upstream, still accepted
    ("bpfKubeProxyHealthzPort", Uint16),
    ("bpfKubeProxyIptablesCleanupEnabled", bool),
    ("bpfKubeProxyMinSyncPeriod", Duration),
    ("bpfL3IfacePattern", str),
    ("bpfLogFilters", dict[str, str]),
    ("bpfLogLevel", _ci_enum("Off", "Info", "Debug")),
    ("bpfMaglevMaxEndpointsPerService", NonNegInt),
    ("bpfMaglevMaxServices", NonNegInt),
    ("bpfMapSizeConntrack", NonNegInt),
    ("bpfMapSizeConntrackCleanupQueue", Annotated[int, Field(ge=1)]),
    ("bpfMapSizeConntrackScaling", _ci_enum("Disabled", "DoubleIfFull")),
    ("bpfMapSizeIPSets", NonNegInt),
    ("bpfMapSizeIfState", NonNegInt),
    ("bpfMapSizeNATAffinity", NonNegInt),
    ("bpfMapSizeNATBackend", NonNegInt),
    ("bpfMapSizeNATFrontend", NonNegInt),
    ("bpfMapSizePerCpuConntrack", NonNegInt),
    ("bpfMapSizeRoute", NonNegInt),
    ("bpfPSNATPorts", Port),
    ("bpfPolicyDebugEnabled", bool),
    ("bpfProfiling", EnabledDisabled),
    ("bpfRedirectToPeer", EnabledDisabled),
    ("cgroupV2Path", str),
    ("chainInsertMode", _ci_enum("Insert", "Append")),
    ("dataplaneDriver", str),
    ("dataplaneWatchdogTimeout", Duration),
    ("debugDisableLogDropping", bool),
    ("debugHost", str),
    ("debugMemoryProfilePath", str),
    ("debugPort", Uint16),
    ("debugSimulateCalcGraphHangAfter", Duration),
    ("debugSimulateDataplaneApplyDelay", Duration),
    ("debugSimulateDataplaneHangAfter", Duration),
    ("defaultEndpointToHostAction", _ci_enum("Drop", "Accept", "Return")),
    ("deviceRouteProtocol", Annotated[int, Field(ge=0, le=255)]),
    ("deviceRouteSourceAddress", IPv4Addr),
    ("deviceRouteSourceAddressIPv6", IPv6Addr),
    ("disableConntrackInvalidCheck", bool),
    ("endpointReportingDelay", Duration),
    ("endpointReportingEnabled", bool),
    ("endpointStatusPathPrefix", str),
    ("featureDetectOverride", _pattern(r"^([a-zA-Z0-9-_]+=(true|false|),)*([a-zA-Z0-9-_]+=(true|false|))?$", "featureDetectOverride")),
    ("featureGates", _pattern(r"^([a-zA-Z0-9-_]+=([^=]+),)*([a-zA-Z0-9-_]+=([^=]+))?$", "featureGates")),
    ("floatingIPs", EnabledDisabled),
    ("flowLogsCollectorDebugTrace", bool),
    ("flowLogsFlushInterval", Duration),
    ("flowLogsGoldmaneServer", str),
    ("flowLogsLocalReporter", EnabledDisabled),
    ("flowLogsPolicyEvaluationMode", Literal["None", "Continuous"]),
    ("genericXDPEnabled", bool),
    ("goGCThreshold", int),
    ("goMaxProcs", int),
    ("goMemoryLimitMB", int),
    ("healthEnabled", bool),
    ("healthHost", str),
    ("healthPort", Uint16),
    ("interfaceExclude", str),
    ("interfacePrefix", str),
    ("interfaceRefreshInterval", Duration),
    ("ipForwarding", EnabledDisabled),
    ("ipipEnabled", bool),
    ("ipipMTU", NonNegInt),
    ("ipsetsRefreshInterval", Duration),
    ("iptablesBackend", _ci_enum("Auto", "Legacy", "NFT")),
    ("iptablesFilterAllowAction", AcceptReturn),
    ("iptablesFilterDenyAction", DropReject),
    ("iptablesLockFilePath", str),  # deprecated upstream, still accepted
    ("iptablesLockProbeInterval", Duration),
    ("iptablesLockTimeout", Duration),  # deprecated upstream, still accepted
    ("iptablesMangleAllowAction", AcceptReturn),
    ("iptablesMarkMask", Uint32),
    ("iptablesNATOutgoingInterfaceFilter", str),
    ("iptablesPostWriteCheckInterval", Duration),
    ("iptablesRefreshInterval", Duration),
    ("ipv6Support", bool),
    ("logActionRateLimit", _pattern(r"^[1-9]\d{0,3}/(?:second|minute|hour|day)$", "logActionRateLimit")),
    ("logActionRateLimitBurst", Annotated[int, Field(ge=0, le=9999)]),
    ("logDebugFilenameRegex", str),
    ("logFilePath", str),
    ("logPrefix", _pattern(r"^([a-zA-Z0-9%: /_-])*$", "logPrefix")),
    ("logSeverityFile", LogLevel),
    ("logSeverityScreen", LogLevel),
    ("logSeveritySys", LogLevel),
    ("maxIpsetSize", NonNegInt),
    ("metadataAddr", str),
    ("metadataPort", Uint16),
    ("mtuIfacePattern", str),
    ("natOutgoingAddress", IPv4Addr),
    ("natOutgoingExclusions", Literal["IPPoolsOnly", "IPPoolsAndHostIPs"]),
    ("natPortRange", Port),
    ("netlinkTimeout", Duration),
    ("nftablesFilterAllowAction", AcceptReturn),
    ("nftablesFilterDenyAction", DropReject),
    ("nftablesMangleAllowAction", AcceptReturn),
    ("nftablesMarkMask", Uint32),
    ("nftablesMode", Literal["Disabled", "Enabled", "Auto"]),
    ("nftablesRefreshInterval", Duration),
    ("policySyncPathPrefix", str),
    ("programClusterRoutes", str),
    ("prometheusGoMetricsEnabled", bool),
    ("prometheusMetricsCAFile", str),
    ("prometheusMetricsCertFile", str),
    ("prometheusMetricsClientAuth", str),
    ("prometheusMetricsEnabled", bool),
    ("prometheusMetricsHost", str),
    ("prometheusMetricsKeyFile", str),
    ("prometheusMetricsPort", Uint16),
    ("prometheusProcessMetricsEnabled", bool),
    ("prometheusWireGuardMetricsEnabled", bool),
    ("removeExternalRoutes", bool),
    ("reportingInterval", Duration),
    ("reportingTTL", Duration),
    ("requireMTUFile", bool),
    ("routeRefreshInterval", Duration),
    ("routeSource", _ci_enum("WorkloadIPs", "CalicoIPAM")),
    ("routeSyncDisabled", bool),
    ("serviceLoopPrevention", _ci_enum("Drop", "Reject", "Disabled")),
    ("sidecarAccelerationEnabled", bool),
    ("usageReportingEnabled", bool),
    ("usageReportingInitialDelay", Duration),
    ("usageReportingInterval", Duration),
    ("useInternalDataplaneDriver", bool),
    ("vxlanEnabled", bool),
    ("vxlanMTU", NonNegInt),
    ("vxlanMTUV6", NonNegInt),
    ("vxlanPort", Uint16),
    ("vxlanVNI", Uint32),
    ("windowsManageFirewallRules", EnabledDisabled),
    ("wireguardEnabled", bool),
    ("wireguardEnabledV6", bool),
    ("wireguardHostEncryptionEnabled", bool),
    ("wireguardInterfaceName", str),
    ("wireguardInterfaceNameV6", str),
    ("wireguardKeepAlive", Duration),
    ("wireguardListeningPort", Uint16),
    ("wireguardListeningPortV6", Uint16),
    ("wireguardMTU", NonNegInt),
    ("wireguardMTUV6", NonNegInt),
    ("wireguardRoutingRulePriority", NonNegInt),
    ("wireguardThreadingEnabled", bool),
    ("workloadSourceSpoofing", _ci_enum("Disabled", "Any")),
    ("xdpEnabled", bool),
    ("xdpRefreshInterval", Duration),
]


def snake_case(name: str) -> str:
    """``iptablesMarkMask`` -> ``iptables_mark_mask``; ``bpfCTLBLogFilter`` -> ``bpf_ctlb_log_filter``."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return s.lower()


FelixConfigurationSpec = create_model(  # type: ignore[call-overload]
    "FelixConfigurationSpec",
    __base__=_FelixSpecBase,
    __module__=__name__,
    **{snake_case(n): (Optional[t], Field(None, alias=n)) for n, t in _FLAT_FIELDS},
)
FelixConfigurationSpec.__doc__ = "FelixConfiguration spec: every Felix parameter, all optional."

# JSON name -> attribute name, for config loaders.
FIELD_NAMES: dict[str, str] = {
    f.alias: name for name, f in FelixConfigurationSpec.model_fields.items() if f.alias is not None
}


class FelixConfiguration(Resource):
    KIND: ClassVar[str] = "FelixConfiguration"
    NAMESPACED: ClassVar[bool] = False

    spec: FelixConfigurationSpec = Field(default_factory=FelixConfigurationSpec)  # type: ignore[valid-type]
