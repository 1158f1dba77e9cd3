//! Tests of the lab itself: namespaces are created, usable and removed.

use natrec_tests::lab::{self, Netns};

fn ns_listed(name: &str) -> bool {
    let out = lab::run_cmd(&["ip", "netns", "list"]).expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn netns_is_created_entered_and_removed() {
    if !lab::lab_test_start().expect("lab capabilities") {
        return;
    }
    let ns = Netns::new("t").expect("netns");
    let name = ns.name().to_owned();
    assert!(ns_listed(&name), "{name} not in `ip netns list`");
    // A socket made by run_in belongs to the namespace: only `lo` is there.
    let links = ns.exec(&["ip", "-o", "link"]).expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert_eq!(
        links.lines().count(),
        1,
        "a fresh namespace has only lo: {links}"
    );
    let inode_inside = ns
        .run_in(|| {
            std::fs::metadata("/proc/thread-self/ns/net")
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        })
        .expect("run_in")
        .expect("stat ns");
    let inode_here = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata("/proc/thread-self/ns/net").expect("stat own ns"),
    );
    let inode_file = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(format!("/run/netns/{name}")).expect("stat"),
    );
    assert_eq!(inode_inside, inode_file);
    assert_ne!(inode_inside, inode_here);
    // A process left running inside does not keep the namespace alive.
    let _sleeper = ns.spawn(&["sleep", "60"]).expect("spawn");
    let sleeper2 = ns.spawn(&["sleep", "60"]).expect("spawn");
    std::mem::forget(sleeper2); // only the namespace's drop can end this one
    assert_eq!(ns.pids().expect("pids").len(), 2);
    drop(_sleeper);
    drop(ns);
    assert!(!ns_listed(&name), "{name} still listed after drop");
}
