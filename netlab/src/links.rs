//! Link impairments on a running lab: the root qdisc (netem, or TBF for a
//! rate alone) for each direction [`crate::model::impair::impaired`] names, set over
//! netlink, and the kernel probe that refuses what the kernel cannot do.
//!
//! A qdisc netlab sets carries handle `4e4c:` ("NL"), so it is told from
//! one a user put there by hand. What `up` (or `link set`) applied is
//! recorded in the lab's state directory (`links.json`): `up` then changes
//! only the egresses whose impairment differs, removes the qdiscs of those
//! no longer impaired, and leaves every other one alone. `down` needs
//! nothing: the qdiscs go with the veths.

use anyhow::{bail, Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    packet_core::{
        DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
        NLM_F_REQUEST,
    },
    packet_route::{
        tc::{TcAttribute, TcHandle, TcMessage},
        RouteNetlinkMessage,
    },
    Handle, LinkIfb,
};
use serde::{Deserialize, Serialize};

use crate::{
    model::{
        impair::{ifb_name, impaired, Direction, Impair, Impaired, Qdisc},
        topology::Lab,
    },
    netlink::{is_errno, link_by_name, nl},
    state::LabDir,
    system::System,
};

/// The major number of every qdisc handle netlab sets ("NL").
pub const HANDLE_MAJOR: u16 = 0x4e4c;

/// What is applied now, as recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub impaired: Vec<Impaired>,
}

impl Applied {
    fn find(&self, i: &Impaired) -> Option<&Impaired> {
        self.impaired.iter().find(|a| same_place(a, i))
    }
}

fn same_place(a: &Impaired, b: &Impaired) -> bool {
    a.node == b.node && a.ifname == b.ifname && a.direction == b.direction
}

/// Whether this kernel can make a netem qdisc: tried on the loopback of a
/// namespace made for the probe and gone with the probe's thread. Only
/// ENOENT (no such qdisc kind, and no module to load) says no.
pub fn netem_available() -> Result<bool> {
    std::thread::spawn(|| -> Result<bool> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("unshare(CLONE_NEWNET) for the netem probe")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            let probe = Impair {
                delay_ns: 1_000_000,
                ..Impair::default()
            };
            match add_qdisc(&handle, 1, &probe).await {
                Ok(()) => Ok(true),
                Err(e) if is_errno(&e, libc::ENOENT) => Ok(false),
                Err(e) => Err(nl(e).context("probing for sch_netem")),
            }
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the netem probe panicked"))?
}

/// Refuse (before anything is made) impairments this kernel cannot give:
/// all but a rate alone need `sch_netem`.
pub fn refuse_missing(wanted: &[Impaired]) -> Result<()> {
    let first = wanted
        .iter()
        .find(|e| e.impair.qdisc() == Some(Qdisc::Netem));
    if let Some(first) = first {
        if !netem_available()? {
            bail!(
                "this kernel has no sch_netem qdisc (module not found), which `{}` needs at {first} \
                 (only `rate` alone works without it, with tbf); load sch_netem or remove those impairments",
                first.impair,
            );
        }
    }
    Ok(())
}

/// Bring the lab's queues to what `lab` asks for; one line per change.
pub async fn converge(sys: &mut System, lab: &Lab) -> Result<Vec<String>> {
    let dir = LabDir::of(&lab.name);
    let before: Applied = dir.read_links().unwrap_or_default();
    let wanted = impaired(lab);
    let mut lines = Vec::new();
    for i in &wanted {
        let h = sys.node(&lab.netns_of(&i.node)).await?;
        let unchanged = before.find(i) == Some(i) && queue_in_place(&h, i).await?;
        if !unchanged {
            apply(&h, i, Some(&i.impair))
                .await
                .with_context(|| format!("impairing {i}"))?;
            lines.push(format!("impaired {i}: {}", i.impair));
        }
    }
    for old in &before.impaired {
        if wanted.iter().any(|w| same_place(w, old)) || lab.node(&old.node).is_none() {
            continue; // kept, or gone with its node
        }
        let h = sys.node(&lab.netns_of(&old.node)).await?;
        apply(&h, old, None)
            .await
            .with_context(|| format!("removing the impairment of {old}"))?;
        lines.push(format!("no longer impaired: {old}"));
    }
    dir.write_links(&Applied { impaired: wanted })?;
    Ok(lines)
}

/// What `up` would change in the lab's queues (from the record: a live
/// `link set`, or a file edited since), one line each.
pub fn drift(lab: &Lab) -> Vec<String> {
    let applied: Applied = LabDir::of(&lab.name).read_links().unwrap_or_default();
    let wanted = impaired(lab);
    let mut out: Vec<String> = wanted
        .iter()
        .filter(|w| applied.find(w) != Some(*w))
        .map(|w| format!("impair {w}: {}", w.impair))
        .collect();
    out.extend(
        applied
            .impaired
            .iter()
            .filter(|a| !wanted.iter().any(|w| same_place(w, a)))
            .map(|a| format!("remove the impairment of {a}")),
    );
    out
}

/// Whether `i`'s queue is there (its qdisc, and for `in` the IFB).
async fn queue_in_place(h: &Handle, i: &Impaired) -> Result<bool> {
    let dev = match i.direction {
        Direction::Out => i.ifname.clone(),
        Direction::In => ifb_name(&i.ifname),
    };
    match link_by_name(h, &dev).await? {
        Some(link) => root_is_ours(h, link.index).await,
        None => Ok(false),
    }
}

/// Set (`Some`) or remove (`None`) the queue of `i`'s direction.
async fn apply(h: &Handle, i: &Impaired, impair: Option<&Impair>) -> Result<()> {
    let iface = link_by_name(h, &i.ifname)
        .await?
        .with_context(|| format!("no interface {} in node {}", i.ifname, i.node))?;
    match (i.direction, impair) {
        (Direction::Out, imp) => set(h, iface.index, imp).await,
        (Direction::In, Some(imp)) => {
            let ifb = ensure_ifb(h, &ifb_name(&i.ifname)).await?;
            set(h, ifb, Some(imp)).await?;
            redirect_ingress(h, iface.index, ifb).await
        }
        (Direction::In, None) => {
            delete_redirect(h, iface.index).await?;
            if let Some(ifb) = link_by_name(h, &ifb_name(&i.ifname)).await? {
                crate::netlink::delete_link(h, ifb.index).await?;
            }
            Ok(())
        }
    }
}

/// Make `impair` the root qdisc of interface `index` (`None`: remove
/// netlab's, leaving the kernel's default).
pub async fn set(h: &Handle, index: u32, impair: Option<&Impair>) -> Result<()> {
    if root_is_ours(h, index).await? {
        let mut del = h.qdisc().del(index as i32);
        del.message_mut().header.parent = TcHandle::ROOT;
        del.message_mut().header.handle = TcHandle::from((u32::from(HANDLE_MAJOR)) << 16);
        del.execute()
            .await
            .map_err(nl)
            .context("removing a qdisc")?;
    }
    if let Some(imp) = impair.filter(|i| !i.is_none()) {
        add_qdisc(h, index, imp)
            .await
            .map_err(nl)
            .with_context(|| format!("adding {} ({imp})", imp.qdisc().map_or("", |q| q.kind())))?;
    }
    Ok(())
}

/// The kind of the root qdisc of `index` when netlab set it.
pub async fn root_kind(h: &Handle, index: u32) -> Result<Option<String>> {
    let msgs: Vec<TcMessage> = h
        .qdisc()
        .get()
        .index(index as i32)
        .execute()
        .try_collect()
        .await
        .map_err(nl)?;
    Ok(msgs
        .into_iter()
        .filter(|m| {
            m.header.index == index as i32
                && m.header.parent == TcHandle::ROOT
                && m.header.handle.major == HANDLE_MAJOR
        })
        .find_map(|m| {
            m.attributes.into_iter().find_map(|a| match a {
                TcAttribute::Kind(k) => Some(k),
                _ => None,
            })
        }))
}

async fn root_is_ours(h: &Handle, index: u32) -> Result<bool> {
    Ok(root_kind(h, index).await?.is_some())
}

async fn add_qdisc(h: &Handle, index: u32, imp: &Impair) -> Result<(), rtnetlink::Error> {
    let Some(qdisc) = imp.qdisc() else {
        return Ok(());
    };
    let mut msg = TcMessage::with_index(index as i32);
    msg.header.parent = TcHandle::ROOT;
    msg.header.handle = TcHandle {
        major: HANDLE_MAJOR,
        minor: 0,
    };
    msg.attributes.push(TcAttribute::Kind(qdisc.kind().into()));
    let options = match qdisc {
        Qdisc::Netem => netem_options(imp),
        Qdisc::Tbf => tbf_options(imp.rate_bps),
    };
    msg.attributes
        .push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)));
    request(
        h,
        RouteNetlinkMessage::NewQueueDiscipline(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
}

/// One request, its acknowledgement awaited.
async fn request(h: &Handle, msg: RouteNetlinkMessage, flags: u16) -> Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut h = h.clone();
    let mut responses = h.request(req)?;
    while let Some(m) = responses.next().await {
        if let NetlinkPayload::Error(e) = m.payload {
            if e.code.is_some() {
                return Err(rtnetlink::Error::NetlinkError(e));
            }
        }
    }
    Ok(())
}

/// The IFB device `name` in this namespace, up (made if missing).
async fn ensure_ifb(h: &Handle, name: &str) -> Result<u32> {
    if link_by_name(h, name).await?.is_none() {
        h.link()
            .add(LinkIfb::new(name).up().build())
            .execute()
            .await
            .map_err(nl)
            .with_context(|| format!("creating IFB device {name}"))?;
    }
    let link = link_by_name(h, name)
        .await?
        .with_context(|| format!("IFB device {name} missing after creating it"))?;
    crate::netlink::set_up(h, link.index).await?;
    Ok(link.index)
}

/// The priority of netlab's filter at an interface's ingress.
const FILTER_PRIORITY: u16 = HANDLE_MAJOR;

fn ingress_filter(index: u32) -> TcMessage {
    let mut msg = TcMessage::with_index(index as i32);
    msg.header.parent = TcHandle {
        major: 0xffff,
        minor: TcHandle::MIN_INGRESS,
    };
    // TC_H_MAKE(priority << 16, htons(ETH_P_ALL)).
    msg.header.info =
        u32::from(FILTER_PRIORITY) << 16 | u32::from((libc::ETH_P_ALL as u16).to_be());
    msg
}

/// Everything arriving at `index` goes through IFB `ifb` first (a clsact
/// qdisc, made if missing, and one u32 filter with a mirred redirect).
async fn redirect_ingress(h: &Handle, index: u32, ifb: u32) -> Result<()> {
    let mut clsact = TcMessage::with_index(index as i32);
    clsact.header.parent = TcHandle::CLSACT;
    clsact.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    clsact.attributes.push(TcAttribute::Kind("clsact".into()));
    match request(
        h,
        RouteNetlinkMessage::NewQueueDiscipline(clsact),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .await
    {
        Err(e) if !is_errno(&e, libc::EEXIST) => return Err(nl(e).context("adding a clsact qdisc")),
        _ => {}
    }
    delete_redirect(h, index).await?;
    let mut filter = h.traffic_filter(index as i32).add().ingress();
    filter = filter
        .priority(FILTER_PRIORITY)
        .protocol((libc::ETH_P_ALL as u16).to_be())
        .redirect(ifb)
        .map_err(nl)?;
    filter
        .execute()
        .await
        .map_err(nl)
        .context("redirecting the ingress to its IFB")
}

/// Remove netlab's ingress filter of `index`, if there.
async fn delete_redirect(h: &Handle, index: u32) -> Result<()> {
    match request(
        h,
        RouteNetlinkMessage::DelTrafficFilter(ingress_filter(index)),
        0,
    )
    .await
    {
        Err(e) if !is_errno(&e, libc::ENOENT) && !is_errno(&e, libc::EINVAL) => {
            Err(nl(e).context("removing the ingress redirect"))
        }
        _ => Ok(()),
    }
}

/// What `netlab link set` changes: `(key, value)` pairs as `impair = {}`
/// takes them, or all cleared, in one direction or (`None`) both.
pub struct LiveSet {
    pub values: Vec<(&'static str, String)>,
    pub clear: bool,
    pub direction: Option<Direction>,
}

/// `NODE` (a node with one interface) or `NODE:IFACE`, as (node, interface).
pub fn resolve_target(lab: &Lab, target: &str) -> Result<(String, String)> {
    let (node, iface) = match target.split_once(':') {
        Some((n, i)) => (n, Some(i)),
        None => (target, None),
    };
    let Some(n) = lab.node(node) else {
        bail!("lab {} has no node {node}", lab.name);
    };
    let names: Vec<&str> = n.interfaces.iter().map(|i| i.name.as_str()).collect();
    match iface {
        Some(i) if names.contains(&i) => Ok((node.into(), i.into())),
        Some(i) => bail!(
            "node {node} has no interface {i} (it has {})",
            names.join(", ")
        ),
        None if names.len() == 1 => Ok((node.into(), names[0].into())),
        None => bail!(
            "node {node} has {} interfaces: say which, as {node}:IFACE ({})",
            names.len(),
            names.join(", ")
        ),
    }
}

/// `netlab link set`: change a link end's impairments now, until the next
/// `up` (which sets the file's again). Returns what it did, one line each.
pub async fn set_live(
    sys: &mut System,
    lab: &Lab,
    target: &str,
    change: &LiveSet,
) -> Result<Vec<String>> {
    let (node, ifname) = resolve_target(lab, target)?;
    let mut over = Impair::default();
    for (key, value) in &change.values {
        over.set(key, value)
            .map_err(|e| anyhow::anyhow!("--{key}: {e}"))?;
    }
    let dir = LabDir::of(&lab.name);
    let mut record: Applied = dir.read_links().unwrap_or_default();
    let directions = match change.direction {
        Some(d) => vec![d],
        None => vec![Direction::Out, Direction::In],
    };
    let mut next = Vec::new();
    for direction in directions {
        let mut item = Impaired {
            node: node.clone(),
            ifname: ifname.clone(),
            direction,
            impair: Impair::default(),
        };
        let now = record.find(&item).map(|i| i.impair).unwrap_or_default();
        item.impair = if change.clear {
            Impair::default()
        } else {
            now.overlaid(&over)
        };
        if let Some(problem) = item.impair.problem() {
            bail!("{item}: {problem}");
        }
        next.push(item);
    }
    refuse_missing(&next)?;
    let h = sys.node(&lab.netns_of(&node)).await?;
    let mut lines = Vec::new();
    for item in next {
        let wanted = (!item.impair.is_none()).then_some(&item.impair);
        apply(&h, &item, wanted)
            .await
            .with_context(|| format!("impairing {item}"))?;
        lines.push(format!("{item}: {}", item.impair));
        record.impaired.retain(|a| !same_place(a, &item));
        if wanted.is_some() {
            record.impaired.push(item);
        }
    }
    dir.write_links(&record)?;
    Ok(lines)
}

/// `netlab link down|up`: the node's end of the link (its peer sees the
/// carrier go, as a pulled cable would). The next `up` sets it up again.
pub async fn set_state(sys: &mut System, lab: &Lab, target: &str, up: bool) -> Result<String> {
    let (node, ifname) = resolve_target(lab, target)?;
    let h = sys.node(&lab.netns_of(&node)).await?;
    let link = link_by_name(&h, &ifname)
        .await?
        .with_context(|| format!("no interface {ifname} in node {node} (is the lab up?)"))?;
    crate::netlink::set_state(&h, link.index, up).await?;
    Ok(format!(
        "{node}:{ifname} {}",
        if up { "up" } else { "down" }
    ))
}

/// One link end as `link show` and `status` show it.
#[derive(Clone, Debug, Serialize)]
pub struct LinkView {
    pub node: String,
    pub interface: String,
    /// `None`: not there (the lab is not up).
    pub up: Option<bool>,
    pub out: Option<QueueView>,
    #[serde(rename = "in")]
    pub inbound: Option<QueueView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct QueueView {
    pub impair: String,
    /// The qdisc that gives it (`netem` or `tbf`).
    pub mechanism: &'static str,
    /// Whether it differs from the lab file (set by `link set`).
    pub live: bool,
}

/// Every link end of the lab, its state and its impairments as applied.
pub async fn view(sys: &mut System, lab: &Lab) -> Result<Vec<LinkView>> {
    let record: Applied = LabDir::of(&lab.name).read_links().unwrap_or_default();
    let file = impaired(lab);
    let mut out = Vec::new();
    for node in &lab.nodes {
        let h = sys.node(&node.netns).await.ok();
        for iface in &node.interfaces {
            let up = match &h {
                Some(h) => link_by_name(h, &iface.name).await?.map(|l| l.up),
                None => None,
            };
            let queue = |direction| {
                let probe = Impaired {
                    node: node.name.clone(),
                    ifname: iface.name.clone(),
                    direction,
                    impair: Impair::default(),
                };
                let applied = record.find(&probe)?;
                Some(QueueView {
                    impair: applied.impair.to_string(),
                    mechanism: applied.impair.qdisc().map_or("none", Qdisc::kind),
                    live: !file.contains(applied),
                })
            };
            out.push(LinkView {
                node: node.name.clone(),
                interface: iface.name.clone(),
                up,
                out: queue(Direction::Out),
                inbound: queue(Direction::In),
            });
        }
    }
    Ok(out)
}

/// `link show`'s lines.
pub fn view_lines(views: &[LinkView]) -> Vec<String> {
    views
        .iter()
        .map(|v| {
            let state = match v.up {
                Some(true) => "up",
                Some(false) => "DOWN",
                None => "missing",
            };
            let q = |q: &Option<QueueView>| match q {
                Some(q) => format!(
                    "{} ({}{})",
                    q.impair,
                    q.mechanism,
                    if q.live { ", live" } else { "" }
                ),
                None => "none".into(),
            };
            format!(
                "{}:{} {state}  out: {}  in: {}",
                v.node,
                v.interface,
                q(&v.out),
                q(&v.inbound)
            )
        })
        .collect()
}

const TCA_OPTIONS: u16 = 2;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TCA_NETEM_REORDER: u16 = 3;
const TCA_NETEM_CORRUPT: u16 = 4;
const TCA_NETEM_RATE: u16 = 6;
const TCA_NETEM_RATE64: u16 = 8;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// Packets netem holds (its default is 1000: too few for a delayed fast link).
const NETEM_LIMIT: u32 = 10_000;

/// A probability in netem's scale (u32::MAX is 100%).
fn netem_probability(ppb: u32) -> u32 {
    (u64::from(ppb) * u64::from(u32::MAX) / 1_000_000_000) as u32
}

fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(len.next_multiple_of(4), 0);
    out
}

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// netem's options: `struct tc_netem_qopt`, then its attributes (delays
/// in 64-bit nanoseconds, as tc sends them since Linux 4.15).
fn netem_options(imp: &Impair) -> Vec<u8> {
    let gap = u32::from(imp.reorder_ppb != 0); // tc's default: reorder every packet by chance
    let mut out = words(&[
        0, // latency in ticks: given by TCA_NETEM_LATENCY64
        NETEM_LIMIT,
        netem_probability(imp.loss_ppb),
        gap,
        netem_probability(imp.duplicate_ppb),
        0, // jitter in ticks: TCA_NETEM_JITTER64
    ]);
    out.extend(nla(TCA_NETEM_LATENCY64, &imp.delay_ns.to_ne_bytes()));
    out.extend(nla(TCA_NETEM_JITTER64, &imp.jitter_ns.to_ne_bytes()));
    if imp.reorder_ppb != 0 {
        out.extend(nla(
            TCA_NETEM_REORDER,
            &words(&[netem_probability(imp.reorder_ppb), 0]),
        ));
    }
    if imp.corrupt_ppb != 0 {
        out.extend(nla(
            TCA_NETEM_CORRUPT,
            &words(&[netem_probability(imp.corrupt_ppb), 0]),
        ));
    }
    if imp.rate_bps != 0 {
        let bytes = imp.rate_bps / 8;
        let low = u32::try_from(bytes).unwrap_or(u32::MAX);
        out.extend(nla(TCA_NETEM_RATE, &words(&[low, 0, 0, 0])));
        if bytes > u64::from(u32::MAX) {
            out.extend(nla(TCA_NETEM_RATE64, &bytes.to_ne_bytes()));
        }
    }
    out
}

/// The bytes a token bucket may send at once: 20 ms at the rate, and
/// never less than 64 KiB, so that a GSO packet passes whole and a timer
/// that fires late (an emulated VM's do by 25 ms) loses no tokens: with
/// 10 ms and 16 KiB a 20mbit bucket passed 12.5-13.6 Mbit/s on the 6.1 VM.
pub fn tbf_burst(rate_bps: u64) -> u32 {
    u32::try_from((rate_bps / 8 / 50).max(64 * 1024)).unwrap_or(u32::MAX)
}

/// TBF's options: `struct tc_tbf_qopt` (the rate; a queue of 50 ms at the
/// rate plus the burst, as tc's `latency 50ms` gives) and the burst in bytes.
fn tbf_options(rate_bps: u64) -> Vec<u8> {
    let bytes = rate_bps / 8;
    let burst = tbf_burst(rate_bps);
    let limit = u32::try_from(bytes / 20 + u64::from(burst)).unwrap_or(u32::MAX);
    // struct tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate.
    let mut rate = vec![0u8, TC_LINKLAYER_ETHERNET, 0, 0, 0, 0, 0, 0];
    rate.extend_from_slice(&u32::try_from(bytes).unwrap_or(u32::MAX).to_ne_bytes());
    let mut parms = rate;
    parms.extend_from_slice(&[0u8; 12]); // no peak rate
    parms.extend(words(&[limit, 0, 0])); // buffer: from TCA_TBF_BURST; mtu: peak rate only
    let mut out = nla(TCA_TBF_PARMS, &parms);
    out.extend(nla(TCA_TBF_BURST, &burst.to_ne_bytes()));
    if bytes > u64::from(u32::MAX) {
        out.extend(nla(TCA_TBF_RATE64, &bytes.to_ne_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netem_options_are_the_struct_then_attributes() {
        let imp = Impair {
            delay_ns: 40_000_000,
            loss_ppb: 500_000_000,
            ..Impair::default()
        };
        let o = netem_options(&imp);
        // 24 bytes of tc_netem_qopt, then latency and jitter (12 bytes each).
        assert_eq!(o.len(), 24 + 12 + 12);
        assert_eq!(&o[4..8], &NETEM_LIMIT.to_ne_bytes());
        assert_eq!(&o[8..12], &(u32::MAX / 2).to_ne_bytes());
        assert_eq!(&o[24..28], &[12, 0, 10, 0]);
        assert_eq!(&o[28..36], &40_000_000u64.to_ne_bytes());
        assert_eq!(netem_probability(1_000_000_000), u32::MAX);
    }

    #[test]
    fn tbf_options_hold_the_rate_in_bytes_and_a_burst() {
        let o = tbf_options(20_000_000);
        assert_eq!(&o[0..4], &[40, 0, 1, 0]);
        assert_eq!(o[5], TC_LINKLAYER_ETHERNET);
        assert_eq!(&o[12..16], &2_500_000u32.to_ne_bytes());
        assert_eq!(&o[40..44], &[8, 0, 6, 0]);
        assert_eq!(&o[44..48], &65_536u32.to_ne_bytes());
        assert_eq!(tbf_burst(1_000_000_000), 2_500_000);
    }
}
