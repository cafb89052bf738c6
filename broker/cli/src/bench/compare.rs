//! Comparing variants of one benchmark within one run (DESIGN §8: ratios from one run, never
//! absolute figures across runs): the order variants run in, round after round, and the
//! summary of their throughputs as ratios to the first variant of the same round.
//!
//! The order alternates (A B, B A, A B, …) so that a drift of the shared machine during the
//! run (another build starting, the page cache filling) does not always favour the same
//! variant. Pure bookkeeping, no I/O.

use std::fmt;

use super::stats::Throughput;

/// The indices of `variants` variants in the order round `round` (from 0) runs them: as given
/// in even rounds, reversed in odd ones.
pub fn round_order(variants: usize, round: u32) -> Vec<usize> {
    let order = 0..variants;
    match round % 2 {
        0 => order.collect(),
        _ => order.rev().collect(),
    }
}

/// Throughputs of named variants over rounds.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// What the figures are of, e.g. "produce".
    what: &'static str,
    labels: Vec<String>,
    /// `rounds[r][v]`: variant `v` in round `r`, once measured.
    rounds: Vec<Vec<Option<Throughput>>>,
}

impl Comparison {
    /// An empty comparison of the variants named `labels` (the first is the reference).
    pub fn new(what: &'static str, labels: Vec<String>) -> Self {
        Self {
            what,
            labels,
            rounds: Vec::new(),
        }
    }

    /// Records what variant `variant` measured in round `round` (from 0).
    pub fn record(&mut self, round: u32, variant: usize, throughput: Throughput) {
        let round = round as usize;
        if self.rounds.len() <= round {
            self.rounds
                .resize_with(round + 1, || vec![None; self.labels.len()]);
        }
        if let Some(slot) = self.rounds[round].get_mut(variant) {
            *slot = Some(throughput);
        }
    }

    /// Whether there is anything to compare: more than one variant or more than one round.
    pub fn is_worth_showing(&self) -> bool {
        self.labels.len() > 1 || self.rounds.len() > 1
    }

    /// Variant `variant`'s records/s in round `round` relative to the first variant's.
    fn ratio(&self, round: usize, variant: usize) -> Option<f64> {
        let row = self.rounds.get(round)?;
        let reference = row.first()?.as_ref()?.records_per_sec();
        let this = row.get(variant)?.as_ref()?.records_per_sec();
        (reference > 0.0).then(|| this / reference)
    }

    /// The median over the rounds of variant `variant`'s records/s and of its ratio to the
    /// first variant.
    pub fn medians(&self, variant: usize) -> (Option<f64>, Option<f64>) {
        let rates = self
            .rounds
            .iter()
            .filter_map(|row| row.get(variant)?.as_ref().map(Throughput::records_per_sec));
        let ratios = (0..self.rounds.len()).filter_map(|round| self.ratio(round, variant));
        (median(rates.collect()), median(ratios.collect()))
    }
}

/// The median of `values`: the middle one, or the mean of the two middle ones; `None` when
/// there are none.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Width of one variant's column: "1234567 rec/s ×1.00".
const COLUMN: usize = 22;

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reference = self.labels.first().map_or("", String::as_str);
        writeln!(
            f,
            "{} compared: records/s, ×ratio to {reference} in the same round (order alternates \
             each round)",
            self.what
        )?;
        write!(f, "  {:<7}", "round")?;
        for label in &self.labels {
            write!(f, "  {label:>COLUMN$}")?;
        }
        writeln!(f)?;
        let cell = |rate: Option<f64>, ratio: Option<f64>| match (rate, ratio) {
            (Some(rate), Some(ratio)) => format!("{rate:.0} rec/s ×{ratio:.2}"),
            (Some(rate), None) => format!("{rate:.0} rec/s"),
            _ => "-".to_owned(),
        };
        for (round, row) in self.rounds.iter().enumerate() {
            write!(f, "  {:<7}", round + 1)?;
            for (variant, measured) in row.iter().enumerate() {
                let rate = measured.as_ref().map(Throughput::records_per_sec);
                let text = cell(rate, self.ratio(round, variant));
                write!(f, "  {text:>COLUMN$}")?;
            }
            writeln!(f)?;
        }
        write!(f, "  {:<7}", "median")?;
        for variant in 0..self.labels.len() {
            let (rate, ratio) = self.medians(variant);
            let text = cell(rate, ratio);
            write!(f, "  {text:>COLUMN$}")?;
        }
        writeln!(f)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn per_second(records: u64) -> Throughput {
        Throughput {
            records,
            bytes: records * 1000,
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_order_alternates_between_rounds() {
        assert_eq!(round_order(2, 0), [0, 1]);
        assert_eq!(round_order(2, 1), [1, 0]);
        assert_eq!(round_order(2, 2), [0, 1]);
        assert_eq!(round_order(3, 1), [2, 1, 0]);
        assert_eq!(round_order(1, 7), [0]);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn ratios_are_taken_within_a_round_and_their_median_reported() {
        let mut comparison = Comparison::new("produce", vec!["records".into(), "batch".into()]);
        // Round 2 is on a slower machine: the absolute figures halve, the ratio holds.
        for (round, (a, b)) in [(1000, 1500), (500, 700), (1000, 1400)]
            .into_iter()
            .enumerate()
        {
            comparison.record(round as u32, 1, per_second(b));
            comparison.record(round as u32, 0, per_second(a));
        }
        assert_eq!(comparison.ratio(1, 1), Some(1.4));
        assert_eq!(comparison.medians(0), (Some(1000.0), Some(1.0)));
        assert_eq!(comparison.medians(1), (Some(1400.0), Some(1.4)));
        let text = comparison.to_string();
        assert!(text.starts_with("produce compared"), "{text}");
        assert!(text.contains("×ratio to records"), "{text}");
        assert!(text.contains("1500 rec/s ×1.50"), "{text}");
        assert!(text.contains("700 rec/s ×1.40"), "{text}");
        let median_row = text.lines().last().expect("a median row");
        assert!(median_row.contains("1000 rec/s ×1.00"), "{text}");
        assert!(median_row.contains("1400 rec/s ×1.40"), "{text}");
        assert!(comparison.is_worth_showing());
    }

    #[test]
    fn a_single_run_is_not_a_comparison_and_missing_runs_show_as_dashes() {
        let mut single = Comparison::new("consume", vec!["batches".into()]);
        single.record(0, 0, per_second(10));
        assert!(!single.is_worth_showing());

        let mut partial = Comparison::new("consume", vec!["records".into(), "batches".into()]);
        partial.record(0, 1, per_second(10));
        assert_eq!(partial.medians(1), (Some(10.0), None));
        assert!(partial.to_string().contains(" - "), "{partial}");
    }
}
