//! The name the relay gives itself to SMTP servers (EHLO) and in the right
//! part of its Message-IDs. Servers that check it (Postfix's
//! `reject_non_fqdn_helo_hostname`, exim's strict HELO checks) refuse a
//! bare host name such as `vm`, so the default is the host's fully
//! qualified name, else the From address's domain.

/// `helo_name` when it is not set: the host's fully qualified name (its
/// kernel host name when that has a dot, else the first dotted name
/// `/etc/hosts` gives it), else the domain of `from`.
pub fn default_name(from: &lettre::message::Mailbox) -> String {
    let short = crate::config::host_name().unwrap_or_default();
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    fqdn(&short, &hosts).unwrap_or_else(|| from.email.domain().to_owned())
}

/// The fully qualified name of host `short`, from the text of `/etc/hosts`
/// (what `hostname -f` finds there); never a `localhost` name.
pub fn fqdn(short: &str, hosts: &str) -> Option<String> {
    let usable = |name: &str| {
        name.contains('.')
            && !name.to_ascii_lowercase().starts_with("localhost")
            && check(name).is_ok()
    };
    if usable(short) {
        return Some(short.to_owned());
    }
    if short.is_empty() {
        return None;
    }
    hosts
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .filter_map(|line| {
            let names: Vec<&str> = line.split_whitespace().skip(1).collect();
            names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(short))
                .then(|| names.into_iter().find(|n| usable(n)))
                .flatten()
        })
        .next()
        .map(str::to_owned)
}

/// Whether `name` can be given in EHLO: a domain name (letters, digits and
/// hyphens in dot-separated labels of at most 63, 253 in all) or an
/// address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
pub fn check(name: &str) -> Result<(), String> {
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        let ok = match literal.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "`{name}` is not an address literal; e.g. \"[192.0.2.1]\" or \"[IPv6:2001:db8::1]\""
            ))
        };
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a host name (letters, digits and hyphens between dots); e.g. \"relay.example.org\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fully_qualified_name_is_found() {
        let hosts = "127.0.0.1\tlocalhost localhost.localdomain vm\n\
                     # 10.0.0.9 vm.commented.example vm\n\
                     127.0.1.1 vm.lab.example.org vm # the host\n\
                     ::1 localhost ip6-localhost\n";
        for (short, hosts, want) in [
            ("vm", hosts, Some("vm.lab.example.org")),
            ("VM", hosts, Some("vm.lab.example.org")),
            ("relay.example.org", "", Some("relay.example.org")),
            ("vm", "127.0.0.1 localhost localhost.localdomain vm\n", None),
            ("other", hosts, None),
            ("", hosts, None),
            (
                "vm",
                "127.0.1.1 vm bad_name.example vm.ok.example\n",
                Some("vm.ok.example"),
            ),
        ] {
            assert_eq!(fqdn(short, hosts).as_deref(), want, "{short} in {hosts:?}");
        }
    }

    #[test]
    fn names_servers_take() {
        for name in [
            "relay.example.org",
            "vm",
            "a-b.c1",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
        ] {
            assert_eq!(check(name), Ok(()), "{name}");
        }
        for name in [
            "",
            "a..b",
            "-a.b",
            "a_b.example",
            "[300.1.1.1]",
            "[2001:db8::1]",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(check(name).is_err(), "{name}");
        }
    }
}
