//! PostgreSQL connection-URL and identifier helpers: swapping the database of a
//! `postgres://` URL (keeping user, password, host, port and query parameters)
//! and quoting SQL identifiers.

/// Returns `url` with its database (path component, and any `dbname=` query
/// parameter) replaced by `database`.
///
/// Accepts `postgres://` and `postgresql://` URLs with or without a path, e.g.
/// `postgres://u:p@host:5432/app?sslmode=disable` or
/// `postgres:///app?host=/var/run/postgresql`.
pub(crate) fn with_database(url: &str, database: &str) -> Result<String, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("not a postgres:// URL: {url:?}"))?;
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(format!("unsupported URL scheme {scheme:?} in {url:?}: expected postgres:// or postgresql://"));
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    let after = after.strip_prefix('/').map_or(after, |p| {
        // Skip the old database name.
        let end = p.find(['?', '#']).unwrap_or(p.len());
        &p[end..]
    });
    let (query, fragment) = match after.find('#') {
        Some(i) => after.split_at(i),
        None => (after, ""),
    };
    let kept: Vec<&str> = query
        .strip_prefix('?')
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("dbname="))
        .collect();
    let query = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
    Ok(format!("{scheme}://{authority}/{}{query}{fragment}", percent_encode(database)))
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Quotes `ident` as a PostgreSQL identifier (`"..."`, inner quotes doubled).
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_path_and_keeps_everything_else() {
        let cases = [
            ("postgres://postgres@127.0.0.1:5432/app", "postgres://postgres@127.0.0.1:5432/postgres"),
            ("postgres://h", "postgres://h/postgres"),
            ("postgresql://u:p@h/", "postgresql://u:p@h/postgres"),
            ("postgres://u@h:1/app?sslmode=disable&dbname=x", "postgres://u@h:1/postgres?sslmode=disable"),
            ("postgres:///app?host=/var/run/postgresql", "postgres:///postgres?host=/var/run/postgresql"),
            ("postgres://h?dbname=x", "postgres://h/postgres"),
        ];
        for (input, want) in cases {
            assert_eq!(with_database(input, "postgres").as_deref(), Ok(want));
        }
    }

    #[test]
    fn encodes_names_and_rejects_other_schemes() {
        assert_eq!(with_database("postgres://h/a", "my db").as_deref(), Ok("postgres://h/my%20db"));
        assert!(with_database("mysql://h/a", "x").is_err());
        assert!(with_database("h/a", "x").is_err());
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
