//! The hosts of a chaos cluster: one Linux network namespace per node, joined to a
//! bridge in the root namespace by a veth pair, each with its own address.
//!
//! Faults on the wire are iptables rules inside a namespace dropping what arrives from
//! some peers; healing flushes them. Some clients run in the root namespace and reach
//! every node through the bridge (the faults never cut them off); others run inside a
//! node's namespace and are cut off with it.
//!
//! Everything is named after one prefix, so that a run killed half-way is cleaned up by
//! the next one. It must never touch an interface, namespace or rule it did not name.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, bail};

const PREFIX: &str = "tch";
const BRIDGE: &str = "tch-br";
/// The subnet's first three octets: the root namespace is .1, node `i` is `.10 + i`.
const SUBNET: &str = "10.213.77";

/// Runs a command, failing with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A node's namespace and address.
#[derive(Debug, Clone)]
pub struct Host {
    pub index: usize,
    pub namespace: String,
    pub ip: String,
}

/// The bridge and the namespaces; removed when dropped.
pub struct Network {
    pub hosts: Vec<Host>,
}

impl Host {
    /// The namespace's file, which a thread joins it through (`setns`).
    pub fn namespace_path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.namespace)
    }
}

impl Network {
    /// Creates `nodes` namespaces on a fresh bridge, after removing anything a previous
    /// run left behind. Needs root.
    pub fn create(nodes: usize) -> anyhow::Result<Network> {
        if nodes == 0 || nodes > 50 {
            bail!("a chaos cluster has 1 to 50 nodes, not {nodes}");
        }
        cleanup_leftovers();
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])
            .context("creating the bridge (are you root?)")?;
        // From here on, dropping the network removes whatever was made.
        let mut network = Network { hosts: Vec::new() };
        // Docker loads br_netfilter and drops forwarded traffic by default: bridged
        // packets between our namespaces must be let through explicitly.
        run("iptables", &["-I", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"])?;
        run("ip", &["addr", "add", &format!("{SUBNET}.1/24"), "dev", BRIDGE])?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        for index in 1..=nodes {
            let namespace = format!("{PREFIX}-n{index}");
            let host_side = format!("{PREFIX}-v{index}");
            let ip = format!("{SUBNET}.{}", 10 + index);
            run("ip", &["netns", "add", &namespace])?;
            network.hosts.push(Host { index, namespace: namespace.clone(), ip: ip.clone() });
            run(
                "ip",
                &["link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &namespace],
            )?;
            run("ip", &["link", "set", &host_side, "master", BRIDGE])?;
            run("ip", &["link", "set", &host_side, "up"])?;
            network.exec(index, &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            network.exec(index, &["ip", "link", "set", "eth0", "up"])?;
            network.exec(index, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    pub fn host(&self, index: usize) -> &Host {
        &self.hosts[index - 1]
    }

    /// Runs a command inside node `index`'s namespace.
    pub fn exec(&self, index: usize, command: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["netns", "exec", self.host(index).namespace.as_str()];
        args.extend_from_slice(command);
        run("ip", &args)
    }

    /// Node `to` drops every packet arriving from node `from`.
    pub fn drop_from(&self, to: usize, from: usize) -> anyhow::Result<()> {
        let source = self.host(from).ip.clone();
        self.exec(to, &["iptables", "-A", "INPUT", "-s", &source, "-j", "DROP"]).map(|_| ())
    }

    /// Node `node` and every other node drop what the other sends to `port` (TCP): the
    /// service on that port is cut off from its peers elsewhere, while everything else
    /// (other services, the clients in the root namespace) still reaches it.
    pub fn isolate_port(&self, node: usize, port: u16) -> anyhow::Result<()> {
        let port = port.to_string();
        for other in self.hosts.iter().map(|host| host.index).filter(|&other| other != node) {
            for (to, from) in [(node, other), (other, node)] {
                let source = self.host(from).ip.clone();
                let rule =
                    ["iptables", "-A", "INPUT", "-s", &source, "-p", "tcp", "--dport", &port, "-j", "DROP"];
                self.exec(to, &rule)?;
            }
        }
        Ok(())
    }

    /// Cuts every link between the two sides, both ways.
    pub fn partition(&self, side: &BTreeSet<usize>, other: &BTreeSet<usize>) -> anyhow::Result<()> {
        for &a in side {
            for &b in other {
                self.drop_from(a, b)?;
                self.drop_from(b, a)?;
            }
        }
        Ok(())
    }

    /// Removes every drop rule: the network is whole again.
    pub fn heal(&self) -> anyhow::Result<()> {
        for host in &self.hosts {
            self.exec(host.index, &["iptables", "-F", "INPUT"])?;
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        cleanup_leftovers();
    }
}

/// Removes the veth pairs, namespaces, bridge and forwarding rule of this or an earlier
/// run. The veth pairs go first and by name: the kernel tears down a deleted namespace's
/// interfaces later, on a work queue of its own, and the next round must not find them.
fn cleanup_leftovers() {
    if let Ok(links) = run("ip", &["-o", "link", "show"]) {
        let veth_prefix = format!("{PREFIX}-v");
        for name in links.lines().filter_map(|line| line.split(':').nth(1)) {
            let name = name.trim().split('@').next().unwrap_or_default();
            if name.starts_with(&veth_prefix) {
                let _ = run("ip", &["link", "del", name]);
            }
        }
    }
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for name in list.lines().filter_map(|line| line.split_whitespace().next()) {
            if name.starts_with(&format!("{PREFIX}-n")) {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
    let _ = run("ip", &["link", "del", BRIDGE]);
    while run("iptables", &["-D", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]).is_ok() {}
}
