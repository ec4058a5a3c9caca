//! Ranking metrics of a scorer on labelled pairs: recall at a precision floor, best F1, and the
//! calibration of score thresholds to target precisions. A pair is served (a hit) when its score
//! is at or above the threshold; positives are the duplicate pairs.

use switchyard_actors::cache::semantic::policy::CalibrationPoint;

/// One cut of the ranking: serving every pair scored at or above `threshold`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OperatingPoint {
    /// Lowest score served.
    pub threshold: f32,
    /// Served duplicates over served pairs.
    pub precision: f64,
    /// Served duplicates over all duplicates.
    pub recall: f64,
}

/// Every distinct threshold's operating point, highest threshold first. Empty without duplicates.
pub fn operating_points(scored: &[(f32, bool)]) -> Vec<OperatingPoint> {
    let positives = scored.iter().filter(|(_, duplicate)| *duplicate).count();
    if positives == 0 {
        return Vec::new();
    }
    let mut ranked: Vec<(f32, bool)> = scored
        .iter()
        .copied()
        .filter(|(score, _)| !score.is_nan())
        .collect();
    ranked.sort_by(|left, right| right.0.total_cmp(&left.0));
    let mut points = Vec::new();
    let (mut served, mut served_duplicates) = (0_usize, 0_usize);
    for (position, &(score, duplicate)) in ranked.iter().enumerate() {
        served += 1;
        served_duplicates += usize::from(duplicate);
        // Cut only between distinct scores: ties are served together.
        let next_is_lower = ranked.get(position + 1).is_none_or(|next| next.0 < score);
        if next_is_lower {
            points.push(OperatingPoint {
                threshold: score,
                precision: served_duplicates as f64 / served as f64,
                recall: served_duplicates as f64 / positives as f64,
            });
        }
    }
    points
}

/// The highest recall among the points with precision at least `precision` (0 if none).
pub fn recall_at_precision(points: &[OperatingPoint], precision: f64) -> f64 {
    best_point_at_precision(points, precision).map_or(0.0, |point| point.recall)
}

/// The point with the highest recall among those with precision at least `precision`; among
/// equal recalls, the highest threshold (the most precise).
pub fn best_point_at_precision(
    points: &[OperatingPoint],
    precision: f64,
) -> Option<OperatingPoint> {
    points
        .iter()
        .filter(|point| point.precision >= precision)
        .max_by(|left, right| {
            left.recall
                .total_cmp(&right.recall)
                .then(left.threshold.total_cmp(&right.threshold))
        })
        .copied()
}

/// The best F1 over all thresholds, and its threshold.
pub fn best_f1(points: &[OperatingPoint]) -> (f64, f32) {
    points
        .iter()
        .map(|point| {
            let sum = point.precision + point.recall;
            (
                if sum > 0.0 {
                    2.0 * point.precision * point.recall / sum
                } else {
                    0.0
                },
                point.threshold,
            )
        })
        .fold((0.0, f32::NAN), |best, candidate| {
            if candidate.0 > best.0 {
                candidate
            } else {
                best
            }
        })
}

/// Area under the precision-recall curve (average precision), for choosing between fits.
pub fn average_precision(points: &[OperatingPoint]) -> f64 {
    let mut area = 0.0;
    let mut previous_recall = 0.0;
    for point in points {
        area += (point.recall - previous_recall) * point.precision;
        previous_recall = point.recall;
    }
    area
}

/// Precision and recall when serving every pair scored at or above `threshold`.
pub fn at_threshold(scored: &[(f32, bool)], threshold: f32) -> OperatingPoint {
    let positives = scored.iter().filter(|(_, duplicate)| *duplicate).count();
    let served: Vec<bool> = scored
        .iter()
        .filter(|(score, _)| *score >= threshold)
        .map(|(_, duplicate)| *duplicate)
        .collect();
    let served_duplicates = served.iter().filter(|duplicate| **duplicate).count();
    OperatingPoint {
        threshold,
        precision: if served.is_empty() {
            1.0
        } else {
            served_duplicates as f64 / served.len() as f64
        },
        recall: if positives == 0 {
            0.0
        } else {
            served_duplicates as f64 / positives as f64
        },
    }
}

/// A cut of the ranking with its counts.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Cut {
    /// Lowest score served.
    pub threshold: f32,
    /// Served duplicates over served pairs.
    pub precision: f64,
    /// Pairs served.
    pub served: usize,
    /// Duplicates among them.
    pub duplicates: usize,
}

/// The most precise cut serving at least `min_served_duplicates` duplicates (of `positives`); among
/// equally precise cuts, the one serving more. `None` if no cut serves that many.
pub fn precision_ceiling(
    points: &[OperatingPoint],
    positives: usize,
    min_served_duplicates: usize,
) -> Option<Cut> {
    points
        .iter()
        .map(|point| {
            let duplicates = (point.recall * positives as f64).round() as usize;
            let served = if point.precision > 0.0 {
                (duplicates as f64 / point.precision).round() as usize
            } else {
                0
            };
            Cut {
                threshold: point.threshold,
                precision: point.precision,
                served,
                duplicates,
            }
        })
        .filter(|cut| cut.duplicates >= min_served_duplicates)
        .max_by(|left, right| {
            left.precision
                .total_cmp(&right.precision)
                .then(left.served.cmp(&right.served))
        })
}

/// The calibration table: for each target precision (ascending), the lowest threshold reaching it,
/// made ascending (a higher precision never gets a lower threshold). Targets that no threshold
/// reaches with at least `min_served_duplicates` duplicates served end the table.
pub fn calibrate(
    points: &[OperatingPoint],
    targets: &[f64],
    positives: usize,
    min_served_duplicates: usize,
) -> Vec<CalibrationPoint> {
    let mut table: Vec<CalibrationPoint> = Vec::new();
    for &target in targets {
        let Some(point) = best_point_at_precision(points, target) else {
            break;
        };
        if (point.recall * positives as f64).round() < min_served_duplicates as f64 {
            break;
        }
        let threshold = table
            .last()
            .map_or(point.threshold, |last| last.threshold.max(point.threshold));
        table.push(CalibrationPoint {
            precision: target as f32,
            threshold,
            recall: point.recall as f32,
        });
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored() -> Vec<(f32, bool)> {
        vec![
            (0.9, true),
            (0.8, true),
            (0.7, false),
            (0.6, true),
            (0.5, false),
            (0.4, false),
        ]
    }

    #[test]
    fn recall_at_precision_takes_the_deepest_cut_that_keeps_precision() {
        let points = operating_points(&scored());
        assert_eq!(points.len(), 6);
        assert_eq!(recall_at_precision(&points, 1.0), 2.0 / 3.0);
        assert_eq!(recall_at_precision(&points, 0.75), 1.0);
        let (f1, threshold) = best_f1(&points);
        assert!((f1 - 6.0 / 7.0).abs() < 1e-9, "{f1}");
        assert_eq!(threshold, 0.6);
    }

    #[test]
    fn ties_are_served_together() {
        let points = operating_points(&[(0.5, true), (0.5, false), (0.4, true)]);
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].precision, 0.5);
    }

    #[test]
    fn the_ceiling_is_the_most_precise_cut_with_enough_duplicates() {
        let points = operating_points(&scored());
        let ceiling = precision_ceiling(&points, 3, 2).unwrap();
        assert_eq!(
            (ceiling.threshold, ceiling.served, ceiling.duplicates),
            (0.8, 2, 2)
        );
        assert_eq!(precision_ceiling(&points, 3, 3).unwrap().threshold, 0.6);
        assert!(precision_ceiling(&points, 3, 4).is_none());
    }

    #[test]
    fn calibration_thresholds_ascend() {
        let points = operating_points(&scored());
        let table = calibrate(&points, &[0.5, 0.75, 1.0], 3, 1);
        let thresholds: Vec<f32> = table.iter().map(|point| point.threshold).collect();
        assert_eq!(thresholds, vec![0.6, 0.6, 0.8]);
        assert_eq!(at_threshold(&scored(), 0.8).recall, 2.0 / 3.0);
    }
}
