//! Keeping the config's secrets off the page.
//!
//! remote_write passwords and bearer tokens, the provisioning token and passwords inside URLs
//! never leave the device through the API: GET answers show [`MASK`] in their place, and a
//! PUT that sends the mask back unchanged keeps the stored secret, as long as the endpoint's
//! URL keeps its scheme, host and port (so an edit cannot redirect a stored secret to another
//! server).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value as Json;

use super::config_file::FieldError;

/// What a secret looks like on the page (the same text as `vantage_core::config::Secret`).
pub const MASK: &str = "<secret>";

/// Where an endpoint keeps its secrets, as paths into its JSON object.
const ENDPOINT_SECRETS: &[&[&str]] = &[&["bearer_token"], &["basic_auth", "password"]];

fn get_path<'a>(v: &'a Json, path: &[&str]) -> Option<&'a Json> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn get_path_mut<'a>(v: &'a mut Json, path: &[&str]) -> Option<&'a mut Json> {
    path.iter().try_fold(v, |v, k| v.get_mut(k))
}

/// Splits `scheme://user:password@rest` into (`scheme://user:`, `password`, `@rest`).
fn url_password(url: &str) -> Option<(&str, &str, &str)> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let at = start + url[start..authority_end].rfind('@')?;
    let colon = start + url[start..at].find(':')?;
    Some((&url[..=colon], &url[colon + 1..at], &url[at..]))
}

/// The URL with the password in its user info replaced by the mask.
pub fn mask_url(url: &str) -> String {
    match url_password(url) {
        Some((head, _, tail)) => format!("{head}{MASK}{tail}"),
        None => url.to_string(),
    }
}

/// Scheme, host and port of a URL (lowercase, default port filled in), user info left out.
fn origin(url: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (h, after.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    let port = match (port, scheme.as_str()) {
        (Some(p), _) if !p.is_empty() => p.parse().ok()?,
        (_, "http") => 80,
        (_, "https") => 443,
        _ => return None,
    };
    Some((
        scheme,
        host.trim_end_matches('.').to_ascii_lowercase(),
        port,
    ))
}

/// May the stored secrets of `old` go with `new`? Only to the same scheme, host and port.
fn same_origin(new: &Json, old: Option<&Json>) -> bool {
    let url = |v: Option<&Json>| {
        v.and_then(|v| v.get("url"))
            .and_then(Json::as_str)
            .and_then(origin)
    };
    match (url(Some(new)), url(old)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A remote_write endpoint as written, with its secrets masked.
pub fn mask_endpoint(mut ep: Json) -> Json {
    for path in ENDPOINT_SECRETS {
        if let Some(v) = get_path_mut(&mut ep, path)
            && v.is_string()
        {
            *v = Json::from(MASK);
        }
    }
    if let Some(Json::String(u)) = ep.get_mut("url") {
        *u = mask_url(u);
    }
    ep
}

/// Puts the stored secrets back where the page sent the mask. `old` is the endpoint as
/// written before the edit (`None` when adding one). A mask with nothing stored behind it, or
/// on an endpoint whose URL now names another scheme, host or port, is an error on that field.
pub fn unmask_endpoint(new: &mut Json, old: Option<&Json>) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let moved = old.is_some() && !same_origin(new, old);
    let old = if moved { None } else { old };
    let missing = |field: String| {
        FieldError::new(
            field,
            if moved {
                "the URL now names another scheme, host or port; enter the secret again so the \
                 stored one is not sent to the new address"
            } else {
                "no secret is stored for this endpoint; enter it again"
            },
        )
    };
    for path in ENDPOINT_SECRETS {
        let Some(v) = get_path_mut(new, path) else {
            continue;
        };
        if v.as_str() != Some(MASK) {
            continue;
        }
        match old.and_then(|o| get_path(o, path)).and_then(Json::as_str) {
            Some(stored) => *v = Json::from(stored),
            None => errors.push(missing(path.join("."))),
        }
    }
    if let Some(Json::String(u)) = new.get_mut("url")
        && let Some((head, pw, tail)) = url_password(u)
        && pw == MASK
    {
        let stored = old
            .and_then(|o| o.get("url"))
            .and_then(Json::as_str)
            .and_then(url_password)
            .map(|(_, p, _)| p.to_string());
        match stored {
            Some(p) => *u = format!("{head}{p}{tail}"),
            None => errors.push(missing("url".into())),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Secret values in config text: `bearer_token`, `password`, `token` (also as dotted or quoted
/// keys, inline or in tables), in any TOML string form. Works on broken files too, which the
/// page also shows.
static SECRET_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(\b(?:bearer_token|password|token)["']?\s*=\s*)("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"#,
    )
    .expect("valid regex")
});

/// A password in a URL's user info: `://user:password@`.
static URL_PASSWORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(://[^/\s"'@:]*:)[^/\s"'@]*@"#).expect("valid regex"));

/// The config text with every secret value replaced by the mask, layout unchanged otherwise.
pub fn redact_text(text: &str) -> String {
    let once = SECRET_VALUE.replace_all(text, format!("${{1}}\"{MASK}\""));
    URL_PASSWORD
        .replace_all(&once, format!("${{1}}{MASK}@"))
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_are_masked_and_unmasked() {
        let old = json!({"url": "https://u:p4ss@prom.example/api/v1/write",
                         "basic_auth": {"username": "me", "password": "hunter2"}});
        let masked = mask_endpoint(old.clone());
        assert_eq!(masked["basic_auth"]["password"], MASK);
        assert_eq!(masked["basic_auth"]["username"], "me");
        assert_eq!(
            masked["url"],
            "https://u:<secret>@prom.example/api/v1/write"
        );
        assert!(!masked.to_string().contains("hunter2"));
        assert!(!masked.to_string().contains("p4ss"));
        let mut back = masked.clone();
        unmask_endpoint(&mut back, Some(&old)).unwrap();
        assert_eq!(back, old);
        // A new value replaces the old one; a mask with nothing behind it is refused.
        let mut new = json!({"url": "https://prom.example/w", "bearer_token": MASK});
        let errs = unmask_endpoint(&mut new, Some(&old)).unwrap_err();
        assert_eq!(errs[0].field, "bearer_token");
        let mut new = json!({"url": "https://x:<secret>@prom.example/w"});
        let errs = unmask_endpoint(&mut new, None).unwrap_err();
        assert_eq!(errs[0].field, "url");
    }

    #[test]
    fn a_masked_secret_does_not_follow_the_url_to_another_server() {
        let old = json!({"url": "https://u:p4ss@prom.example/api/v1/write",
                         "bearer_token": "tok", "basic_auth": {"username": "me", "password": "pw"}});
        // Same scheme, host and port (default port spelled out, case, path changed): kept.
        for url in [
            "https://u:<secret>@prom.example/api/v1/write",
            "https://u:<secret>@PROM.example:443/other?x=1",
        ] {
            let mut new = json!({"url": url, "bearer_token": MASK,
                                 "basic_auth": {"username": "me", "password": MASK}});
            unmask_endpoint(&mut new, Some(&old)).unwrap();
            assert_eq!(new["bearer_token"], "tok", "{url}");
            assert!(new["url"].as_str().unwrap().contains("p4ss"), "{url}");
        }
        // Another host, port or scheme: every masked field is refused by name.
        for url in [
            "https://u:<secret>@evil.example/api/v1/write",
            "https://u:<secret>@prom.example:8443/api/v1/write",
            "http://u:<secret>@prom.example/api/v1/write",
            "https://u:<secret>@prom.example.evil.example/w",
        ] {
            let mut new = json!({"url": url, "bearer_token": MASK,
                                 "basic_auth": {"username": "me", "password": MASK}});
            let errs = unmask_endpoint(&mut new, Some(&old)).unwrap_err();
            let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(
                fields,
                ["bearer_token", "basic_auth.password", "url"],
                "{url}"
            );
            assert!(
                errs[0].message.contains("another scheme, host or port"),
                "{url}"
            );
            assert!(!new.to_string().contains("tok\""), "{url}");
        }
        let mut new = json!({"url": "not a url", "bearer_token": MASK});
        assert_eq!(
            unmask_endpoint(&mut new, Some(&old)).unwrap_err()[0].field,
            "bearer_token"
        );
        // IPv6 literals compare by address and port.
        let old = json!({"url": "http://[fd00::1]:9090/w", "bearer_token": "tok"});
        let mut new = json!({"url": "http://[FD00::1]:9090/x", "bearer_token": MASK});
        unmask_endpoint(&mut new, Some(&old)).unwrap();
        let mut new = json!({"url": "http://[fd00::2]:9090/w", "bearer_token": MASK});
        assert!(unmask_endpoint(&mut new, Some(&old)).is_err());
    }

    #[test]
    fn text_is_redacted_in_every_form() {
        let text = r#"
[[remote_write]]
url = "https://user:s3cret@prom.example/api/v1/write"
bearer_token = "tok\"en1"

[[remote_write]]
url = "http://10.0.0.1/w"
basic_auth = { username = "u", password = 'pw2' }

[[remote_write]]
url = "http://10.0.0.2/w"
[remote_write.basic_auth]
username = "u"
"password" = """pw3
more"""

[provisioning]
url = "https://central.example/targets.toml"
token = "tok4"
"#;
        let out = redact_text(text);
        for s in ["s3cret", "tok\\\"en1", "pw2", "pw3", "more", "tok4"] {
            assert!(!out.contains(s), "{s} left in:\n{out}");
        }
        assert!(out.contains(r#"username = "u""#), "{out}");
        assert!(out.contains("https://user:<secret>@prom.example"), "{out}");
        // Still valid TOML with the same shape.
        let v: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(v["remote_write"].as_array().unwrap().len(), 3);
    }
}
