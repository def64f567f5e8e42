//! Link impairments on a running lab: the root qdisc (netem, or TBF for a
//! rate alone) at each egress [`model::impair::egresses`] names, set over
//! netlink, and the kernel probe that refuses what the kernel cannot do.
//!
//! A qdisc netlab sets carries handle `4e4c:` ("NL"), so it is told from
//! one a user put there by hand. What `up` (or `link set`) applied is
//! recorded in the lab's state directory (`links.json`): `up` then changes
//! only the egresses whose impairment differs, removes the qdiscs of those
//! no longer impaired, and leaves every other one alone. `down` needs
//! nothing: the qdiscs go with the veths.

use anyhow::{bail, Context as _, Result};
use futures::TryStreamExt as _;
use rtnetlink::{
    packet_core::{
        DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
        NLM_F_REQUEST,
    },
    packet_route::{
        tc::{TcAttribute, TcHandle, TcMessage},
        RouteNetlinkMessage,
    },
    Handle,
};
use serde::{Deserialize, Serialize};

use crate::{
    model::{
        impair::{egresses, Egress, Impair, Qdisc},
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
    pub egresses: Vec<Egress>,
}

impl Applied {
    fn find(&self, e: &Egress) -> Option<&Egress> {
        self.egresses
            .iter()
            .find(|a| a.node == e.node && a.ifname == e.ifname)
    }
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
pub fn refuse_missing(wanted: &[Egress]) -> Result<()> {
    let needs_netem: Vec<&Egress> = wanted
        .iter()
        .filter(|e| e.impair.qdisc() == Some(Qdisc::Netem))
        .collect();
    if let Some(first) = needs_netem.first() {
        if !netem_available()? {
            bail!(
                "this kernel has no sch_netem qdisc (module not found), which `{}` needs at {} \
                 (only `rate` alone works without it, with tbf); load sch_netem or remove those impairments",
                first.impair,
                where_text(first)
            );
        }
    }
    Ok(())
}

fn where_text(e: &Egress) -> String {
    match &e.node {
        Some(n) => format!("{n}:{}", e.ifname),
        None => format!("{} on the lab host", e.ifname),
    }
}

/// Bring the lab's qdiscs to what `lab` asks for; one line per change.
pub async fn converge(sys: &mut System, lab: &Lab) -> Result<Vec<String>> {
    let dir = LabDir::of(&lab.name);
    let before: Applied = dir.read_links().unwrap_or_default();
    let wanted = egresses(lab);
    let mut lines = Vec::new();
    for e in &wanted {
        let h = handle_for(sys, lab, e).await?;
        let index = index_of(&h, e).await?;
        let same = before.find(e) == Some(e) && root_is_ours(&h, index).await?;
        if !same {
            set(&h, index, Some(&e.impair))
                .await
                .with_context(|| format!("impairing {}", where_text(e)))?;
            lines.push(format!("impaired {}: {}", where_text(e), e.impair));
        }
    }
    for old in &before.egresses {
        if wanted.iter().any(|w| w.node == old.node && w.ifname == old.ifname) {
            continue;
        }
        let h = match handle_for(sys, lab, old).await {
            Ok(h) => h,
            Err(_) => continue, // its node left the lab
        };
        if let Some(link) = link_by_name(&h, &old.ifname).await? {
            set(&h, link.index, None).await?;
            lines.push(format!("no longer impaired: {}", where_text(old)));
        }
    }
    dir.write_links(&Applied { egresses: wanted })?;
    Ok(lines)
}

async fn handle_for(sys: &mut System, lab: &Lab, e: &Egress) -> Result<Handle> {
    match &e.node {
        Some(node) => sys.node(&lab.netns_of(node)).await,
        None => Ok(sys.host_netlink().clone()),
    }
}

async fn index_of(h: &Handle, e: &Egress) -> Result<u32> {
    Ok(link_by_name(h, &e.ifname)
        .await?
        .with_context(|| format!("no interface {}", where_text(e)))?
        .index)
}

/// Make `impair` the root qdisc of interface `index` (`None`: remove
/// netlab's, leaving the kernel's default).
pub async fn set(h: &Handle, index: u32, impair: Option<&Impair>) -> Result<()> {
    if root_is_ours(h, index).await? {
        let mut del = h.qdisc().del(index as i32);
        del.message_mut().header.parent = TcHandle::ROOT;
        del.message_mut().header.handle = TcHandle::from((u32::from(HANDLE_MAJOR)) << 16);
        del.execute().await.map_err(nl).context("removing a qdisc")?;
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
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut h = h.clone();
    let mut responses = h.request(req)?;
    use futures::StreamExt as _;
    while let Some(m) = responses.next().await {
        if let NetlinkPayload::Error(e) = m.payload {
            if e.code.is_some() {
                return Err(rtnetlink::Error::NetlinkError(e));
            }
        }
    }
    Ok(())
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

/// The bytes a token bucket may send at once: 10 ms at the rate, and
/// never less than a few full-size frames (or the rate stalls).
pub fn tbf_burst(rate_bps: u64) -> u32 {
    u32::try_from((rate_bps / 8 / 100).max(16 * 1024)).unwrap_or(u32::MAX)
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
        assert_eq!(&o[44..48], &25_000u32.to_ne_bytes());
        assert_eq!(tbf_burst(1_000_000), 16 * 1024);
    }
}
