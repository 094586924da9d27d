//! `--allowed-origin`'s parser: an origin as a browser sends it.

/// An origin as a browser sends it in `Origin`: `scheme://host[:port]`
/// (a trailing `/` tolerated), nothing else: a pattern or a URL with a path
/// would never equal a header, and the option would silently allow nothing.
pub(super) fn origin(text: &str) -> Result<String, String> {
    const FORM: &str = "an origin is scheme://host[:port], as a browser sends it, e.g. \
                        https://app.example.com or http://intranet:8080";
    let trimmed = text.trim();
    let origin = match trimmed.strip_suffix('/') {
        Some(origin) if !origin.ends_with(":/") => origin,
        _ => trimmed,
    };
    if origin.contains('*') {
        return Err(format!(
            "`{text}` is a pattern; {FORM}; list each origin to accept \
             (loopback origins are always accepted)"
        ));
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err(format!("`{text}` has no scheme://; {FORM}"));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(format!("`{text}` has no valid scheme; {FORM}"));
    }
    if let Some(c) = authority
        .chars()
        .find(|c| matches!(c, '/' | '?' | '#' | '@'))
    {
        return Err(format!(
            "`{text}` has more than an origin (a `{c}`: a path, query, fragment or user); {FORM}"
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, rest)) => (host, Some(rest.strip_prefix(':').unwrap_or(rest))),
            None => return Err(format!("`{text}` has an unclosed `[`; {FORM}")),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    // A browser writes the port as the number it is, without leading zeros.
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p.to_string() == port))
    {
        return Err(format!("`{text}` has a bad port `{port}`; {FORM}"));
    }
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => Some("80"),
        "https" => Some("443"),
        _ => None,
    };
    if port.is_some() && port == default_port {
        return Err(format!(
            "`{text}` names the default port, which a browser leaves out of `Origin`; \
             write it without the port ({FORM})"
        ));
    }
    if !authority.starts_with('[') && host.contains(':') {
        return Err(format!("`{text}` has no valid host; {FORM}"));
    }
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{text}` has no valid host; {FORM}"));
    }
    if !host.is_ascii() {
        return Err(format!(
            "`{text}` has a host outside ASCII, which a browser sends in its punycode form \
             (xn--…); write that form ({FORM})"
        ));
    }
    // A browser writes an IPv6 address in its canonical (shortest) form.
    if authority.starts_with('[') {
        match host.parse::<std::net::Ipv6Addr>() {
            Ok(ip) if browser_ipv6(ip) == host.to_ascii_lowercase() => {}
            Ok(ip) => {
                return Err(format!(
                    "`{text}`: a browser writes this address [{}]; write it so ({FORM})",
                    browser_ipv6(ip)
                ));
            }
            Err(_) => return Err(format!("`{text}` has no valid IPv6 address; {FORM}")),
        }
    }
    // A host whose last label is a number is an IPv4 address to a browser,
    // which writes it as four decimal parts without leading zeros.
    let last = host
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or_default();
    if !authority.starts_with('[')
        && (last.bytes().all(|b| b.is_ascii_digit()) || last.to_ascii_lowercase().starts_with("0x"))
        && host.parse::<std::net::Ipv4Addr>().is_err()
    {
        return Err(format!(
            "`{text}` has an IPv4 address a browser writes otherwise (four decimal parts, no \
             leading zeros); {FORM}"
        ));
    }
    Ok(origin.to_string())
}

/// An IPv6 address as a browser serializes it (the WHATWG URL rules): eight
/// hex pieces, the first longest run of two or more zero pieces as `::`,
/// never a dotted IPv4 tail (which Rust's `Display` writes for a mapped one).
fn browser_ipv6(ip: std::net::Ipv6Addr) -> String {
    let pieces = ip.segments();
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, p) in pieces.iter().enumerate() {
        if *p == 0 {
            run = if run.1 == 0 {
                (i, 1)
            } else {
                (run.0, run.1 + 1)
            };
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run = (0, 0);
        }
    }
    let hex = |ps: &[u16]| {
        ps.iter()
            .map(|p| format!("{p:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best.1 < 2 {
        return hex(&pieces);
    }
    format!(
        "{}::{}",
        hex(&pieces[..best.0]),
        hex(&pieces[best.0 + best.1..])
    )
}
