//! The workloads: which operation comes next, in what proportions.
//!
//! YCSB's core workloads (Cooper et al., "Benchmarking Cloud Serving Systems with YCSB"):
//! A update-heavy (50/50 read/update), B read-mostly (95/5), C read-only, D read-latest
//! (95 % reads of recent inserts, 5 % inserts), E short ranges (95 % scans of up to 100
//! keys, 5 % inserts), F read-modify-write (50/50). Plus put-only, get-only and scan-only,
//! and `tso`: timestamps from the placement driver's oracle, no keys at all.
//!
//! Transactional workloads (Tessera only): `txn-put` (one key written per transaction),
//! `txn-two-keys` (two keys half the key space apart, so in two regions once it is
//! split), `txn-transfer` (bank transfers: read two accounts, write both) and
//! `ycsb-f-txn` (YCSB's F with each read and read-modify-write a transaction). A
//! transaction that conflicts is run again from its start, as an application would;
//! its latency counts every try.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use crate::keys::Distribution;

/// One operation of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
    /// A timestamp from the oracle.
    Timestamp,
    /// A read-only transaction reading one key.
    TxnRead,
    /// A transaction writing one key.
    TxnUpdate,
    /// A transaction writing two keys half the key space apart (two regions).
    TxnTwoKeys,
    /// A transaction reading and writing one key (YCSB's F as a transaction).
    TxnReadModifyWrite,
    /// A transaction moving an amount between two accounts (read both, write both).
    TxnTransfer,
}

impl Op {
    pub const ALL: [Op; 11] = [
        Op::Read,
        Op::Update,
        Op::Insert,
        Op::Scan,
        Op::ReadModifyWrite,
        Op::Timestamp,
        Op::TxnRead,
        Op::TxnUpdate,
        Op::TxnTwoKeys,
        Op::TxnReadModifyWrite,
        Op::TxnTransfer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::Insert => "insert",
            Op::Scan => "scan",
            Op::ReadModifyWrite => "read-modify-write",
            Op::Timestamp => "timestamp",
            Op::TxnRead => "txn-read",
            Op::TxnUpdate => "txn-update",
            Op::TxnTwoKeys => "txn-two-keys",
            Op::TxnReadModifyWrite => "txn-read-modify-write",
            Op::TxnTransfer => "txn-transfer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Put,
    Get,
    Scan,
    YcsbA,
    YcsbB,
    YcsbC,
    YcsbD,
    YcsbE,
    YcsbF,
    Tso,
    /// One-key write transactions.
    TxnPut,
    /// Two-key write transactions across regions.
    TxnTwoKeys,
    /// Bank transfers between random accounts.
    TxnTransfer,
    /// YCSB's F with each operation a transaction.
    YcsbFTxn,
}

/// Longest scan of the scan workloads (YCSB's default for E).
pub const MAX_SCAN_LENGTH: usize = 100;

impl Workload {
    /// The operation mix, in percent.
    pub fn mix(self) -> &'static [(Op, u32)] {
        match self {
            Workload::Put => &[(Op::Update, 100)],
            Workload::Get | Workload::YcsbC => &[(Op::Read, 100)],
            Workload::Scan => &[(Op::Scan, 100)],
            Workload::YcsbA => &[(Op::Read, 50), (Op::Update, 50)],
            Workload::YcsbB => &[(Op::Read, 95), (Op::Update, 5)],
            Workload::YcsbD => &[(Op::Read, 95), (Op::Insert, 5)],
            Workload::YcsbE => &[(Op::Scan, 95), (Op::Insert, 5)],
            Workload::YcsbF => &[(Op::Read, 50), (Op::ReadModifyWrite, 50)],
            Workload::Tso => &[(Op::Timestamp, 100)],
            Workload::TxnPut => &[(Op::TxnUpdate, 100)],
            Workload::TxnTwoKeys => &[(Op::TxnTwoKeys, 100)],
            Workload::TxnTransfer => &[(Op::TxnTransfer, 100)],
            Workload::YcsbFTxn => &[(Op::TxnRead, 50), (Op::TxnReadModifyWrite, 50)],
        }
    }

    /// The key distribution YCSB prescribes, unless the command line chose one.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::YcsbD => Distribution::Latest,
            Workload::Put
            | Workload::Get
            | Workload::Scan
            | Workload::Tso
            | Workload::TxnPut
            | Workload::TxnTwoKeys
            | Workload::TxnTransfer => Distribution::Uniform,
            _ => Distribution::Zipfian,
        }
    }

    pub fn next_op(self, rng: &mut impl Rng) -> Op {
        let mut roll = rng.random_range(0..100);
        for &(op, percent) in self.mix() {
            if roll < percent {
                return op;
            }
            roll -= percent;
        }
        // The percentages of every mix add up to 100.
        self.mix()[0].0
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Scan => "scan",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
            Workload::YcsbD => "ycsb-d",
            Workload::YcsbE => "ycsb-e",
            Workload::YcsbF => "ycsb-f",
            Workload::Tso => "tso",
            Workload::TxnPut => "txn-put",
            Workload::TxnTwoKeys => "txn-two-keys",
            Workload::TxnTransfer => "txn-transfer",
            Workload::YcsbFTxn => "ycsb-f-txn",
        })
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(text: &str) -> Result<Workload, String> {
        Ok(match text {
            "put" => Workload::Put,
            "get" => Workload::Get,
            "scan" => Workload::Scan,
            "ycsb-a" => Workload::YcsbA,
            "ycsb-b" => Workload::YcsbB,
            "ycsb-c" => Workload::YcsbC,
            "ycsb-d" => Workload::YcsbD,
            "ycsb-e" => Workload::YcsbE,
            "ycsb-f" => Workload::YcsbF,
            "tso" => Workload::Tso,
            "txn-put" => Workload::TxnPut,
            "txn-two-keys" => Workload::TxnTwoKeys,
            "txn-transfer" => Workload::TxnTransfer,
            "ycsb-f-txn" => Workload::YcsbFTxn,
            other => {
                return Err(format!(
                    "unknown workload {other:?}: put, get, scan, tso, ycsb-a to ycsb-f, txn-put, txn-two-keys, \
                     txn-transfer or ycsb-f-txn"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn every_mix_adds_up_to_one_hundred_percent() {
        let names = ["put", "get", "scan", "ycsb-a", "ycsb-b", "ycsb-c", "ycsb-d", "ycsb-e", "ycsb-f", "tso"];
        let transactional = ["txn-put", "txn-two-keys", "txn-transfer", "ycsb-f-txn"];
        for name in names.into_iter().chain(transactional) {
            let workload: Workload = name.parse().expect("a workload");
            assert_eq!(workload.to_string(), name);
            assert_eq!(workload.mix().iter().map(|(_, p)| p).sum::<u32>(), 100, "{name}");
        }
    }

    #[test]
    fn operations_come_in_the_proportions_of_the_mix() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let updates = (0..100_000).filter(|_| Workload::YcsbB.next_op(&mut rng) == Op::Update).count();
        assert!((4_500..5_500).contains(&updates), "about 5 % updates, got {updates}");
    }
}
