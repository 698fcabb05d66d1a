use super::*;

fn url(text: &str) -> ClusterUrl {
    ClusterUrl::parse(text).unwrap()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The URLs tried, in order, until the round ends.
fn round(rotation: &mut Rotation, targets: &[Target]) -> Vec<String> {
    rotation.begin_round(targets.to_vec());
    let mut tried = vec![rotation.current().unwrap().to_string()];
    while let Some(next) = rotation.failed() {
        tried.push(next.to_string());
    }
    tried
}

fn targets(list: &[&str]) -> Vec<Target> {
    list.iter().map(|u| Target::named(url(u))).collect()
}

#[test]
fn servers_must_be_https_urls_with_host_and_port_listed_once() {
    let ok = parse_servers(&strings(&["https://cp1:8005", "https://[::1]:8005"])).unwrap();
    assert_eq!(ok, [url("https://cp1:8005"), url("https://[::1]:8005")]);
    assert!(parse_servers(&[]).unwrap().is_empty());
    for (list, expected) in [
        (vec![""], "entry 1: is empty"),
        (vec!["https://cp1:8005", "  "], "entry 2: is empty"),
        (
            vec!["http://cp1:8005"],
            "entry 1: 'http://cp1:8005' must start with https://",
        ),
        (vec!["cp1:8005"], "must start with https://"),
        (
            vec!["https://cp1"],
            "entry 1: 'https://cp1' has no port; write the cluster listener's port, e.g. \"https://cp1:8005\"",
        ),
        (vec!["https://cp1:8005/sync"], "must not have a path"),
        (vec!["https://:8005"], "entry 1:"),
        (
            vec!["https://cp1:8005", "https://CP1:8005"],
            "entry 2: 'https://CP1:8005' is listed twice",
        ),
        (vec!["https://cp1:8005\u{1b}[31m"], "\\u{1b}"),
    ] {
        let err = parse_servers(&strings(&list)).unwrap_err();
        assert!(err.contains(expected), "{list:?}: {err}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("https://cp{i}:8005")).collect();
    let err = parse_servers(&many).unwrap_err();
    assert!(err.contains("lists 17 servers; at most 16"), "{err}");
}

#[test]
fn a_round_tries_each_target_once_starting_where_the_last_stream_worked() {
    let list = targets(&["https://a:1", "https://b:1", "https://c:1"]);
    let mut rotation = Rotation::default();
    assert!(rotation.current().is_none());
    // Nothing worked yet: in order, then the same order again after the backoff.
    assert_eq!(
        round(&mut rotation, &list),
        ["https://a:1", "https://b:1", "https://c:1"]
    );
    assert_eq!(
        round(&mut rotation, &list),
        ["https://a:1", "https://b:1", "https://c:1"]
    );

    // a fails, b connects; its stream ends later: the next round starts at b (sticky) and
    // wraps around.
    rotation.begin_round(list.clone());
    assert_eq!(rotation.failed().unwrap().to_string(), "https://b:1");
    rotation.stay();
    assert_eq!(
        round(&mut rotation, &list),
        ["https://b:1", "https://c:1", "https://a:1"]
    );
    // A failed round keeps the start.
    assert_eq!(
        round(&mut rotation, &list),
        ["https://b:1", "https://c:1", "https://a:1"]
    );

    // b said it is shutting down: the next round starts after it.
    rotation.begin_round(list.clone());
    rotation.move_on();
    assert_eq!(
        round(&mut rotation, &list),
        ["https://c:1", "https://a:1", "https://b:1"]
    );
    // ... and after the last one comes the first.
    rotation.begin_round(list.clone());
    assert_eq!(rotation.current().unwrap().to_string(), "https://c:1");
    rotation.move_on();
    assert_eq!(
        round(&mut rotation, &list),
        ["https://a:1", "https://b:1", "https://c:1"]
    );

    // The sticky server is no longer configured: start at the first.
    let other = targets(&["https://x:1", "https://y:1"]);
    assert_eq!(round(&mut rotation, &other), ["https://x:1", "https://y:1"]);

    // One target: a round is one attempt, as without failover.
    let one = targets(&["https://a:1"]);
    rotation.begin_round(one.clone());
    rotation.move_on();
    assert_eq!(round(&mut rotation, &one), ["https://a:1"]);
}

#[test]
fn the_sticky_address_is_found_again_after_a_new_lookup() {
    let cp = url("https://cp:8005");
    let at = |addr: &str| Target {
        url: cp.clone(),
        addr: Some(addr.parse().unwrap()),
    };
    let mut rotation = Rotation::default();
    rotation.begin_round(vec![at("10.0.0.1:8005"), at("10.0.0.2:8005")]);
    rotation.failed();
    rotation.stay();
    // The resolver now answers in another order: the address that worked is still first.
    rotation.begin_round(vec![
        at("10.0.0.3:8005"),
        at("10.0.0.2:8005"),
        at("10.0.0.1:8005"),
    ]);
    assert_eq!(rotation.current(), Some(&at("10.0.0.2:8005")));
    assert_eq!(
        rotation.current().unwrap().to_string(),
        "https://cp:8005 (10.0.0.2:8005)"
    );
    // That address is gone: the name's first address.
    rotation.stay();
    rotation.begin_round(vec![
        Target::named(url("https://other:8005")),
        at("10.0.0.4:8005"),
        at("10.0.0.5:8005"),
    ]);
    assert_eq!(rotation.current(), Some(&at("10.0.0.4:8005")));
}

fn fake(answers: &'static [(&'static str, &'static [&'static str])]) -> Lookup {
    Arc::new(move |authority: String| {
        Box::pin(async move {
            match answers.iter().find(|(name, _)| *name == authority) {
                Some((_, [])) => std::future::pending().await,
                Some((_, addrs)) => Ok(addrs.iter().map(|a| a.parse().unwrap()).collect()),
                None => Err(std::io::Error::other("no such host")),
            }
        })
    })
}

#[tokio::test(start_paused = true)]
async fn names_with_several_addresses_become_one_target_per_address() {
    let lookup = fake(&[
        (
            "multi:8005",
            &["10.0.0.1:8005", "10.0.0.2:8005", "10.0.0.1:8005"],
        ),
        ("single:8005", &["10.0.0.9:8005"]),
        // Never answers: the timeout (paused time) ends the wait.
        ("slow:8005", &[]),
    ]);
    let urls = [
        url("https://multi:8005"),
        url("https://single:8005"),
        url("https://127.0.0.1:8005"),
        url("https://unknown:8005"),
        url("https://slow:8005"),
    ];
    let resolved = resolve(&urls, &lookup, Duration::from_secs(10)).await;
    let shown: Vec<String> = resolved.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "https://multi:8005 (10.0.0.1:8005)",
            "https://multi:8005 (10.0.0.2:8005)",
            // One address, an IP address, or no answer: by name, as without failover.
            "https://single:8005",
            "https://127.0.0.1:8005",
            "https://unknown:8005",
            "https://slow:8005",
        ]
    );
}

#[test]
fn without_servers_the_registration_url_is_used() {
    let registration = url("https://reg:8005");
    assert_eq!(
        urls(&[], &registration),
        std::slice::from_ref(&registration)
    );
    let configured = [url("https://cp1:8005"), url("https://cp2:8005")];
    assert_eq!(urls(&configured, &registration), configured);
}
