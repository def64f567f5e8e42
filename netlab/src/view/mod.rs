//! See the lab: its picture ([`graph`], [`svg`]), its figures in
//! Prometheus' text format ([`metrics`]), both read live from the system
//! ([`live`]), and the read-only web view that serves them ([`serve`]).

pub mod graph;
pub mod live;
pub mod metrics;
pub mod serve;
pub mod svg;

use clap::ValueEnum;

/// What `netlab graph` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Svg,
    Json,
}

/// The lab as `format` text (`live`: what `up` made of it, when it is up).
pub fn render(lab: &crate::model::Lab, live: Option<&graph::Live>, format: GraphFormat) -> String {
    let g = graph::Graph::of(lab, live);
    match format {
        GraphFormat::Dot => g.to_dot(),
        GraphFormat::Mermaid => g.to_mermaid(),
        GraphFormat::Svg => svg::to_svg(&g),
        GraphFormat::Json => g.to_json(),
    }
}

/// `netlab graph`: the lab of `file`, of `name`, the only one up, or the
/// default lab; with its links' state when it is up and readable.
pub async fn graph_text(
    file: Option<&std::path::Path>,
    name: Option<&str>,
    host_netns: Option<&str>,
    format: GraphFormat,
) -> anyhow::Result<String> {
    let state = crate::lab::resolve(file, name, host_netns, None)?;
    let up = crate::lab::read_state(&state.lab.name).is_some();
    let live = match up {
        true => live::link_figures(&state)
            .await
            .ok()
            .map(|links| live::graph_live(&state, &links)),
        false => None,
    };
    Ok(render(&live::drawn_lab(&state), live.as_ref(), format))
}

#[cfg(test)]
pub(crate) mod test_labs {
    use crate::model::{parse, Lab};

    pub fn default_lab() -> Lab {
        crate::model::default_lab()
    }

    /// `n` nodes on one bridge, a forward to the first, and a cable
    /// between the first two.
    pub fn star_lab(n: usize) -> Lab {
        let mut text = String::from(
            "name = \"star\"\n[[bridges]]\nname = \"br0\"\nsubnet = \"192.168.15.0/24\"\n\
             gateway = \"192.168.15.254\"\nmasquerade = true\n",
        );
        for i in 1..=n {
            text.push_str(&format!(
                "[[nodes]]\nname = \"n{i}\"\nbridge = \"br0\"\naddress = \"192.168.15.{i}\"\n"
            ));
        }
        text.push_str(
            "[[cables]]\na = { node = \"n1\", address = \"10.0.1.1/30\" }\n\
             b = { node = \"n2\", address = \"10.0.1.2/30\" }\n",
        );
        text.push_str("[[forwards]]\nprotocol = \"tcp\"\nport = 8080\nto = \"n1:80\"\n");
        parse("star.toml", &text).expect("the star lab is valid")
    }
}
