//! Whether an endpoint is up, from the results of its probes: HAProxy's `fall`/`rise` rule.
//!
//! An endpoint starts *up* (a node that restarts must not refuse logins, nor move databases,
//! before it has probed anything). `fall` consecutive failed probes take an up endpoint down;
//! `rise` consecutive good ones bring a down endpoint back. A result that agrees with the state
//! resets the count, so a flapping endpoint changes state only when it stays changed.

/// How many consecutive results change an endpoint's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive failed probes that take an up endpoint down.
    pub fall: u32,
    /// Consecutive good probes that bring a down endpoint up.
    pub rise: u32,
}

impl Default for Thresholds {
    /// HAProxy's defaults: `fall 3`, `rise 2`.
    fn default() -> Self {
        Self { fall: 3, rise: 2 }
    }
}

/// The state of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Answering its probes.
    Up,
    /// Failing them (`fall` in a row).
    Down,
}

impl Health {
    /// `up` or `down`, for logs and pages.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// One endpoint's state and its run of contrary results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointHealth {
    state: Health,
    contrary: u32,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self {
            state: Health::Up,
            contrary: 0,
        }
    }
}

impl EndpointHealth {
    /// The current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Records a probe's result; returns the new state when this result changed it.
    pub fn record(&mut self, ok: bool, thresholds: Thresholds) -> Option<Health> {
        let agrees = ok == (self.state == Health::Up);
        if agrees {
            self.contrary = 0;
            return None;
        }
        self.contrary = self.contrary.saturating_add(1);
        let needed = match self.state {
            Health::Up => thresholds.fall,
            Health::Down => thresholds.rise,
        };
        if self.contrary < needed.max(1) {
            return None;
        }
        self.contrary = 0;
        self.state = match self.state {
            Health::Up => Health::Down,
            Health::Down => Health::Up,
        };
        Some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(results: &[bool], thresholds: Thresholds) -> Vec<(usize, Health)> {
        let mut endpoint = EndpointHealth::default();
        results
            .iter()
            .enumerate()
            .filter_map(|(i, ok)| endpoint.record(*ok, thresholds).map(|s| (i, s)))
            .collect()
    }

    #[test]
    fn fall_and_rise_count_consecutive_results() {
        let t = Thresholds { fall: 2, rise: 3 };
        // Starts up: one failure is not enough, two in a row are.
        assert_eq!(run(&[false], t), vec![]);
        assert_eq!(run(&[false, false], t), vec![(1, Health::Down)]);
        // A success between failures resets the count.
        assert_eq!(run(&[false, true, false, true, false], t), vec![]);
        // Down, then three successes in a row to come back (a failure in between resets).
        assert_eq!(
            run(&[false, false, true, true, false, true, true, true], t),
            vec![(1, Health::Down), (7, Health::Up)]
        );
    }

    #[test]
    fn thresholds_of_zero_act_as_one() {
        let t = Thresholds { fall: 0, rise: 0 };
        assert_eq!(
            run(&[false, true], t),
            vec![(0, Health::Down), (1, Health::Up)]
        );
    }
}
