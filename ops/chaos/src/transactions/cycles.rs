//! The dependency graph between transactions, and its cycles classified as Adya's
//! anomalies:
//! - **G0**: a cycle of write-write dependencies alone;
//! - **G1c**: a cycle of write-write and write-read dependencies, with a write-read;
//! - **G-single**: a cycle with exactly one read-write anti-dependency;
//! - **G2**: a cycle with read-write anti-dependencies that is not G-single.
//!
//! Cycles are looked for inside strongly connected components (a cycle never leaves
//! one), one witness per component and class: a history with an anomaly usually has
//! many cycles of it, and one named cycle is what a person needs to see. The search
//! per component is bounded, so that a pathological history costs seconds, not hours.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::list_append::{Anomaly, Key, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependency {
    /// The second overwrote the first's version.
    WriteWrite,
    /// The second read the first's version.
    WriteRead,
    /// The second overwrote the version the first read (an anti-dependency).
    ReadWrite,
}

/// Edges tried per component and class before giving up on finding a witness there.
const MAX_TRIES_PER_COMPONENT: usize = 1_000;

#[derive(Debug, Default)]
pub struct Graph {
    /// Edges out of each transaction: (to, dependency) with a key that shows it.
    edges: BTreeMap<usize, BTreeMap<(usize, Dependency), Key>>,
}

impl Graph {
    pub fn add(&mut self, from: usize, to: usize, dependency: Dependency, key: Key) {
        self.edges.entry(from).or_default().entry((to, dependency)).or_insert(key);
    }

    fn nodes(&self) -> BTreeSet<usize> {
        self.edges
            .iter()
            .flat_map(|(from, out)| std::iter::once(*from).chain(out.keys().map(|(to, _)| *to)))
            .collect()
    }

    fn out<'a>(
        &'a self,
        from: usize,
        allowed: &[Dependency],
    ) -> impl Iterator<Item = (usize, Dependency, Key)> + use<'a> {
        let allowed = allowed.to_vec();
        self.edges
            .get(&from)
            .into_iter()
            .flatten()
            .filter(move |((_, dependency), _)| allowed.contains(dependency))
            .map(|(&(to, dependency), &key)| (to, dependency, key))
    }

    /// The strongly connected components with more than one transaction (Kosaraju,
    /// iteratively: histories are too long for recursion).
    fn components(&self, allowed: &[Dependency]) -> Vec<BTreeSet<usize>> {
        let nodes = self.nodes();
        let mut finished = Vec::with_capacity(nodes.len());
        let mut visited = BTreeSet::new();
        for &start in &nodes {
            if !visited.insert(start) {
                continue;
            }
            let mut stack = vec![(start, self.out(start, allowed).map(|(to, _, _)| to).collect::<Vec<_>>())];
            while let Some((node, pending)) = stack.last_mut() {
                match pending.pop() {
                    Some(next) if visited.insert(next) => {
                        let out = self.out(next, allowed).map(|(to, _, _)| to).collect();
                        stack.push((next, out));
                    }
                    Some(_) => {}
                    None => {
                        finished.push(*node);
                        stack.pop();
                    }
                }
            }
        }
        let mut reverse: HashMap<usize, Vec<usize>> = HashMap::new();
        for &from in &nodes {
            for (to, _, _) in self.out(from, allowed) {
                reverse.entry(to).or_default().push(from);
            }
        }
        let mut assigned = BTreeSet::new();
        let mut components = Vec::new();
        for &root in finished.iter().rev() {
            if !assigned.insert(root) {
                continue;
            }
            let (mut component, mut stack) = (BTreeSet::from([root]), vec![root]);
            while let Some(node) = stack.pop() {
                for &previous in reverse.get(&node).into_iter().flatten() {
                    if assigned.insert(previous) {
                        component.insert(previous);
                        stack.push(previous);
                    }
                }
            }
            if component.len() > 1 {
                components.push(component);
            }
        }
        components
    }

    /// A shortest path from `from` to `to` inside `within` over `allowed` edges, as
    /// steps (each transaction with the edge leaving it).
    fn path(
        &self,
        from: usize,
        to: usize,
        within: &BTreeSet<usize>,
        allowed: &[Dependency],
    ) -> Option<Vec<Step>> {
        let mut came_from: HashMap<usize, (usize, Dependency, Key)> = HashMap::new();
        let mut queue = VecDeque::from([from]);
        let mut seen = BTreeSet::from([from]);
        while let Some(node) = queue.pop_front() {
            if node == to {
                let mut steps = Vec::new();
                let mut at = to;
                while at != from {
                    let (previous, dependency, key) = came_from[&at];
                    steps.push(Step { transaction: previous, dependency, key });
                    at = previous;
                }
                steps.reverse();
                return Some(steps);
            }
            for (next, dependency, key) in self.out(node, allowed) {
                if within.contains(&next) && seen.insert(next) {
                    came_from.insert(next, (node, dependency, key));
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// A cycle through the edge `from -> to`, closed by a path over `allowed` edges.
    fn cycle_through(
        &self,
        (from, to, dependency, key): (usize, usize, Dependency, Key),
        within: &BTreeSet<usize>,
        allowed: &[Dependency],
    ) -> Option<Vec<Step>> {
        let mut steps = vec![Step { transaction: from, dependency, key }];
        steps.extend(self.path(to, from, within, allowed)?);
        Some(steps)
    }

    /// The edges of `dependency` inside `component`, at most the search bound.
    fn edges_within(
        &self,
        component: &BTreeSet<usize>,
        dependency: Dependency,
    ) -> Vec<(usize, usize, Dependency, Key)> {
        component
            .iter()
            .flat_map(|&from| {
                self.out(from, &[dependency])
                    .filter(|(to, _, _)| component.contains(to))
                    .map(move |(to, dependency, key)| (from, to, dependency, key))
            })
            .take(MAX_TRIES_PER_COMPONENT)
            .collect()
    }
}

use Dependency::{ReadWrite, WriteRead, WriteWrite};

/// One witness per component of each class found in `graph`.
pub fn classify(graph: &Graph) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for component in graph.components(&[WriteWrite]) {
        let witness = graph
            .edges_within(&component, WriteWrite)
            .into_iter()
            .find_map(|edge| graph.cycle_through(edge, &component, &[WriteWrite]));
        anomalies.extend(witness.map(Anomaly::G0));
    }
    for component in graph.components(&[WriteWrite, WriteRead]) {
        let witness = graph
            .edges_within(&component, WriteRead)
            .into_iter()
            .find_map(|edge| graph.cycle_through(edge, &component, &[WriteWrite, WriteRead]));
        anomalies.extend(witness.map(Anomaly::G1c));
    }
    for component in graph.components(&[WriteWrite, WriteRead, ReadWrite]) {
        let anti = graph.edges_within(&component, ReadWrite);
        let single =
            anti.iter().find_map(|&edge| graph.cycle_through(edge, &component, &[WriteWrite, WriteRead]));
        if let Some(steps) = single {
            anomalies.push(Anomaly::GSingle(steps));
            continue;
        }
        let all = [WriteWrite, WriteRead, ReadWrite];
        anomalies.extend(
            anti.into_iter().find_map(|edge| graph.cycle_through(edge, &component, &all)).map(Anomaly::G2),
        );
    }
    anomalies
}
