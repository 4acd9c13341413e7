//! Which green-only thing is a renamed blue-only thing: columns within a table, tables
//! within the databases. Pure. A pair is proposed only when each is the other's single best
//! candidate; anything tied is left to a person, naming every candidate, never picked.

/// A possible pairing of left `left` (green) and right `right` (blue), with how likely.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub left: usize,
    pub right: usize,
    pub score: f64,
}

/// A right with candidates but no pairing: the lefts that fit it equally well or that fit
/// another right as well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tie {
    pub right: usize,
    pub lefts: Vec<usize>,
}

/// The pairs found (left, right), and the rights left tied.
pub fn pair(mut candidates: Vec<Candidate>) -> (Vec<(usize, usize)>, Vec<Tie>) {
    let mut pairs = Vec::new();
    candidates.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.left.cmp(&b.left))
            .then(a.right.cmp(&b.right))
    });
    loop {
        let open: Vec<Candidate> = candidates
            .iter()
            .copied()
            .filter(|c| !pairs.iter().any(|&(l, r)| l == c.left || r == c.right))
            .collect();
        let unique_best = |c: &Candidate| {
            open.iter()
                .filter(|o| (o.left == c.left || o.right == c.right) && o != &c)
                .all(|o| o.score < c.score - 1e-9)
        };
        match open.iter().find(|c| unique_best(c)) {
            Some(c) => pairs.push((c.left, c.right)),
            None => {
                let mut ties: Vec<Tie> = Vec::new();
                for c in &open {
                    match ties.iter_mut().find(|t| t.right == c.right) {
                        Some(t) => t.lefts.push(c.left),
                        None => ties.push(Tie {
                            right: c.right,
                            lefts: vec![c.left],
                        }),
                    }
                }
                ties.sort_by_key(|t| t.right);
                pairs.sort_unstable();
                return (pairs, ties);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(left: usize, right: usize, score: f64) -> Candidate {
        Candidate { left, right, score }
    }

    #[test]
    fn mutual_best_candidates_pair() {
        let (pairs, ties) = pair(vec![c(0, 0, 0.9), c(1, 0, 0.6), c(1, 1, 0.7)]);
        assert_eq!(pairs, vec![(0, 0), (1, 1)]);
        assert!(ties.is_empty());
    }

    #[test]
    fn ties_are_left_to_a_person_with_every_candidate() {
        // Two green columns fit one blue column equally well.
        let (pairs, ties) = pair(vec![c(0, 0, 0.9), c(1, 0, 0.9)]);
        assert!(pairs.is_empty());
        assert_eq!(
            ties,
            vec![Tie {
                right: 0,
                lefts: vec![0, 1]
            }]
        );
        // One green column fits two blue columns equally well: neither gets it.
        let (pairs, ties) = pair(vec![c(0, 0, 0.9), c(0, 1, 0.9)]);
        assert!(pairs.is_empty());
        assert_eq!(ties.len(), 2);
    }

    #[test]
    fn a_pair_found_first_settles_the_rest() {
        // 0-0 is best for both; then 1 only fits 1.
        let (pairs, ties) = pair(vec![c(0, 0, 0.95), c(1, 0, 0.9), c(1, 1, 0.5), c(0, 1, 0.5)]);
        assert_eq!(pairs, vec![(0, 0), (1, 1)]);
        assert!(ties.is_empty());
    }
}
