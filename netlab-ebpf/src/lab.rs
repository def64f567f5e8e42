//! What the maps user space fills say about the lab: its configuration,
//! its subnets and their treatment, the lab host's interfaces that carry
//! lab traffic, and the port forwards.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use netlab_common::{
    forwarded_port_bit, Endpoint, Endpoint6, ForwardKey, ForwardTarget, NatConfig, SubnetInfo,
    SUBNET_MASQUERADE, SUBNET_ROUTED,
};
use netlab_ebpf::PORT_WORD_BITS;

use crate::maps::{
    CONFIG, FORWARD6_RULES, FORWARDED_PORTS, FORWARD_RULES, LAB_IFACES, LAB_SUBNETS, LAB_SUBNETS6,
};

#[inline(always)]
pub fn config() -> Option<&'static NatConfig> {
    CONFIG.get(0)
}

/// The configuration once `up` has written it (it names the uplink
/// address): until then every hook passes packets untouched.
#[inline(always)]
pub fn active_config() -> Option<&'static NatConfig> {
    config().filter(|c| c.uplink_addr != 0)
}

#[inline(always)]
pub fn subnet_of(addr: u32) -> Option<&'static SubnetInfo> {
    LAB_SUBNETS.get(Key::new(32, addr))
}

/// The IPv6 subnet of the lab `addr` (wire bytes) is in.
#[inline(always)]
pub fn subnet6_of(addr: &[u8; 16]) -> Option<&'static SubnetInfo> {
    LAB_SUBNETS6.get(Key::new(128, *addr))
}

/// Whether `addr` is in a subnet the uplink masquerades.
#[inline(always)]
pub fn masqueraded(addr: u32) -> bool {
    subnet_of(addr).is_some_and(|s| s.flags & SUBNET_MASQUERADE != 0)
}

/// Whether a packet with source `addr` may leave the uplink untranslated:
/// not when it was forwarded from a lab bridge, unless `addr` is in a
/// routed subnet (a masqueraded one is translated before it gets here).
#[inline(always)]
pub fn may_leave_as_is(ctx: &TcContext, subnet: Option<&SubnetInfo>) -> bool {
    if subnet.is_some_and(|s| s.flags & SUBNET_ROUTED != 0) {
        return true;
    }
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    ifindex == 0 || LAB_IFACES.get_ptr(&ifindex).is_none()
}

/// Where a forwarded port goes, and the forward's counter
/// (`fwd_counters`; 0: not counted).
#[inline(always)]
pub fn forward(port: u16, proto: u8) -> Option<(Endpoint, u16)> {
    let t = forward_rule(port, proto)?;
    Some((Endpoint::new(t.addr, t.port, proto), t.counter))
}

/// Where a port forwarded over IPv6 goes, and the forward's counter.
#[inline(always)]
pub fn forward6(port: u16, proto: u8) -> Option<(Endpoint6, u16)> {
    let t = FORWARD6_RULES.get_ptr(&ForwardKey::new(port, proto))?;
    let t = unsafe { &*t };
    Some((Endpoint6::new(t.addr, t.port, proto), t.counter))
}

/// The whole rule of a forwarded port (with the address a forward to
/// another lab host translates its source to).
#[inline(always)]
pub fn forward_rule(port: u16, proto: u8) -> Option<ForwardTarget> {
    let t = FORWARD_RULES.get_ptr(ForwardKey::new(port, proto))?;
    Some(unsafe { *t })
}

/// Whether outside port `port` (network order) is forwarded: new mappings
/// must skip it. Read from the bitmap user space keeps beside
/// `FORWARD_RULES`, an array word rather than a hash lookup.
#[inline(always)]
pub fn forwarded(port: u16, proto: u8) -> bool {
    let port = u16::from_be(port);
    forwarded_word(proto, port / PORT_WORD_BITS) & (1 << (port % PORT_WORD_BITS)) != 0
}

/// The forwarded bits of `proto`'s ports `word * 64 ..` (none for ICMP,
/// which is never forwarded).
#[inline(always)]
pub fn forwarded_word(proto: u8, word: u16) -> u64 {
    let Some((index, _)) = forwarded_port_bit(proto, word * PORT_WORD_BITS) else {
        return 0;
    };
    FORWARDED_PORTS.get(index).copied().unwrap_or(0)
}
