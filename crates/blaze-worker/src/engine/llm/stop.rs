//! Stop strings over streamed text: text that could still turn into a stop string is held
//! back until it is known not to.

/// Matches stop strings across the pieces of a stream.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    /// Adds `piece`; returns the text that is safe to emit and whether a stop string was
    /// hit (the text then ends just before it). `flush` emits everything held back.
    pub fn push(&mut self, piece: &str, flush: bool) -> (String, bool) {
        self.pending.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        if flush {
            return (std::mem::take(&mut self.pending), false);
        }
        let hold = self.stops.iter().map(|s| self.held_for(s)).max().unwrap_or(0);
        let rest = self.pending.split_off(self.pending.len() - hold);
        (std::mem::replace(&mut self.pending, rest), false)
    }

    /// Length of the longest suffix of the pending text that is a proper prefix of `stop`.
    fn held_for(&self, stop: &str) -> usize {
        (1..stop.len())
            .rev()
            .filter(|&k| stop.is_char_boundary(k))
            .find(|&k| self.pending.ends_with(&stop[..k]))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_split_across_pieces_is_found_and_never_emitted() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("hello E", false), ("hello ".into(), false));
        assert_eq!(m.push("N", false), (String::new(), false));
        assert_eq!(m.push("D more", false), (String::new(), true));
    }

    #[test]
    fn false_start_is_released() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("E", false), (String::new(), false));
        assert_eq!(m.push("x", false), ("Ex".into(), false));
        assert_eq!(m.push("E", true), ("E".into(), false));
    }

    #[test]
    fn without_stops_everything_passes() {
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("abc", false), ("abc".into(), false));
    }
}
