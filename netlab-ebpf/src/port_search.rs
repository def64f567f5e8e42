//! A new mapping's outside port: the endpoint's live mapping if it has one
//! (endpoint-independent mapping), else the inside port when it is in the
//! NAT range and free, else a run of consecutive ports from a random
//! start. A port is taken only when it is not forwarded, not used by a
//! socket of the lab host, and not reserved by another endpoint; the flow
//! is made (`flows::insert_pair`) before the search ends, so two flows never
//! share an outside tuple.

use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_get_prandom_u32, bpf_loop},
    programs::TcContext,
    EbpfContext as _,
};
use netlab_common::{Endpoint, NatConfig, IPPROTO_ICMP};
use netlab_ebpf::{in_nat_range, port_candidate};

use crate::{
    binding::{self, host_socket_uses, lifetime_ns, live_binding},
    flows::insert_pair,
    lab::{config, forwarded},
    table,
    template::FlowTemplate,
    verdict::DropReason,
};

/// How many outside ports a new flow tries before giving up (port space
/// exhausted: drop and count): a run of consecutive ports from a random
/// start, which finds the free ports of a nearly full range too.
const PORT_TRIES: u32 = 64;

/// Make the mapped flow `t` (masquerade or hairpin), its outside port
/// found here; the template comes back with that port. `resume`: the
/// calling program's `TAILS` slot, should the table need a collection.
///
/// The attempts run as a `bpf_loop` callback, which the verifier checks
/// once rather than once per unrolled attempt.
#[inline(always)]
pub fn map_flow(
    ctx: &TcContext,
    cfg: &NatConfig,
    t: FlowTemplate,
    now: u64,
    resume: u32,
) -> Result<FlowTemplate, DropReason> {
    if !table::admit(ctx, cfg, &t.opening.key, now, resume) {
        return Err(DropReason::TableFull);
    }
    let mut search = Search {
        skb: ctx.as_ptr(),
        template: t,
        now,
        port: 0,
        probe: port_candidate(cfg, unsafe { bpf_get_prandom_u32() }),
        _pad: [0; 4],
    };
    unsafe {
        bpf_loop(
            1 + PORT_TRIES,
            search_step as *mut c_void,
            &mut search as *mut Search as *mut c_void,
            0,
        );
    }
    if search.port == 0 {
        return Err(DropReason::PortExhausted);
    }
    Ok(search.template)
}

/// What the `bpf_loop` callback works on (on the caller's stack).
#[repr(C)]
struct Search {
    skb: *mut c_void,
    template: FlowTemplate,
    now: u64,
    /// The outside port found (network order), 0 while none.
    port: u16,
    /// Where the run of consecutive attempts starts (host order). Chosen
    /// before the loop: attempts that change nothing but the outcome keep
    /// the verifier's work small.
    probe: u16,
    _pad: [u8; 4],
}

/// One attempt: 0 reuses the endpoint's live mapping, 1 tries to keep the
/// inside port, then consecutive ports from a random start. Returns 1 to
/// stop the loop. Calls no function (see `template::clear_the_rest`).
#[inline(never)]
extern "C" fn search_step(index: u64, search: *mut c_void) -> i64 {
    let search = unsafe { &mut *(search as *mut Search) };
    let Some(cfg) = config() else { return 1 };
    let now = search.now;
    let opening = search.template.opening.key;
    let proto = opening.proto;
    let inside = Endpoint::new(opening.src_addr, opening.src_port, proto);
    if index == 0 {
        if let Some(port) = live_binding(cfg, &inside, now) {
            search.template.set_port(port);
            if insert_pair(cfg, &search.template, now).is_ok() {
                search.port = port;
                return 1;
            }
        }
        return 0;
    }
    let preferred = u16::from_be(inside.port);
    let host_order = if index == 1 && proto != IPPROTO_ICMP && in_nat_range(cfg, preferred) {
        preferred
    } else {
        let step = (index - 2) as u32;
        let span = u32::from(cfg.port_max - cfg.port_min) + 1;
        let offset = (u32::from(search.probe - cfg.port_min) + step) % span;
        cfg.port_min + offset as u16
    };
    let port = host_order.to_be();
    if proto != IPPROTO_ICMP && forwarded(port, proto) {
        return 0;
    }
    // The other direction comes from the template's destination.
    let remote = &search.template.other.key;
    if host_socket_uses(
        search.skb,
        proto,
        remote.src_addr,
        remote.src_port,
        cfg.uplink_addr,
        port,
    ) {
        return 0;
    }
    let outside = Endpoint::new(cfg.uplink_addr, port, proto);
    let expires = now + lifetime_ns(cfg, proto, search.template.state);
    let Some(fresh) = binding::reserve_port(&outside, &inside, expires, now) else {
        return 0;
    };
    search.template.set_port(port);
    if insert_pair(cfg, &search.template, now).is_ok() {
        binding::bind(&inside, &outside, expires);
        search.port = port;
        return 1;
    }
    if fresh {
        binding::release_port(&outside);
    }
    0
}
