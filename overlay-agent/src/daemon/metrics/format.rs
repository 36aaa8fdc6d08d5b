//! The two text formats a scraper may ask for. prometheus-client writes OpenMetrics, which
//! Prometheus asks for by name (`Accept: application/openmetrics-text`); everything else —
//! `curl`, `promtool check metrics`, older scrapers — gets Prometheus' text format 0.0.4,
//! where a counter's HELP and TYPE name its `_total` samples and there is no UNIT or EOF.

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the request's Accept header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// `openmetrics` (as prometheus-client encodes it) in the text format 0.0.4.
pub fn text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_string()
                };
                let tail = if p == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                };
                out += &format!("{p}{name} {tail}\n");
            }
            None => {
                out += line;
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_and_openmetrics_only_lines_go() {
        let om = "# HELP overlay_packets Packets.\n# TYPE overlay_packets counter\n\
                  overlay_packets_total{outcome=\"encap\"} 3\n\
                  # HELP overlay_up Up.\n# TYPE overlay_up gauge\n# UNIT overlay_up x\noverlay_up 1\n# EOF\n";
        assert_eq!(
            text_format(om),
            "# HELP overlay_packets_total Packets.\n# TYPE overlay_packets_total counter\n\
             overlay_packets_total{outcome=\"encap\"} 3\n\
             # HELP overlay_up Up.\n# TYPE overlay_up gauge\noverlay_up 1\n"
        );
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")) && !wants_openmetrics(None));
    }
}
