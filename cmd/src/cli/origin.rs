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
            Ok(ip) if ip.to_string() == host.to_ascii_lowercase() => {}
            Ok(ip) => {
                return Err(format!(
                    "`{text}`: a browser writes this address [{ip}]; write it so ({FORM})"
                ));
            }
            Err(_) => return Err(format!("`{text}` has no valid IPv6 address; {FORM}")),
        }
    }
    Ok(origin.to_string())
}
