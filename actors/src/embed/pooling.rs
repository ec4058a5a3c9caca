//! Sentence pooling on plain slices: attention-masked mean over token vectors, then L2
//! normalisation. The same arithmetic as sentence-transformers' `Pooling(mean)` + `Normalize`.

/// Norms below this are treated as zero: the vector is left as it is instead of blown up.
const MIN_NORM: f32 = 1e-12;

/// Mean of the first `length` token vectors of one sequence.
///
/// `tokens` holds the sequence's token vectors row after row (`padded_length × dimensions`,
/// padding rows last); the rows at and past `length` are padding and are ignored. A `length` of
/// zero gives the zero vector.
pub fn mean_pool(tokens: &[f32], length: usize, dimensions: usize) -> Vec<f32> {
    let mut sum = vec![0.0_f32; dimensions];
    for row in tokens.chunks_exact(dimensions).take(length) {
        for (total, value) in sum.iter_mut().zip(row) {
            *total += value;
        }
    }
    if length > 0 {
        let scale = 1.0 / length as f32;
        for total in &mut sum {
            *total *= scale;
        }
    }
    sum
}

/// Scales `vector` to unit Euclidean length in place; a (near-)zero vector stays as it is.
pub fn l2_normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    if norm > MIN_NORM {
        for value in vector.iter_mut() {
            *value /= norm;
        }
    }
}

/// Cosine similarity of two vectors of the same length; 0 when either is zero.
pub fn cosine(left: &[f32], right: &[f32]) -> f32 {
    let dot: f32 = left.iter().zip(right).map(|(a, b)| a * b).sum();
    let left_norm = left.iter().map(|a| a * a).sum::<f32>().sqrt();
    let right_norm = right.iter().map(|b| b * b).sum::<f32>().sqrt();
    if left_norm <= MIN_NORM || right_norm <= MIN_NORM {
        return 0.0;
    }
    dot / (left_norm * right_norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pool_ignores_padding_rows() {
        // Two real tokens and one padding row of huge values.
        let tokens = [1.0, 2.0, 3.0, 4.0, 1000.0, -1000.0];
        assert_eq!(mean_pool(&tokens, 2, 2), vec![2.0, 3.0]);
    }

    #[test]
    fn mean_pool_of_nothing_is_zero() {
        assert_eq!(mean_pool(&[5.0, 5.0], 0, 2), vec![0.0, 0.0]);
    }

    #[test]
    fn mean_pool_of_one_token_is_that_token() {
        assert_eq!(mean_pool(&[0.5, -0.25, 9.0, 9.0], 1, 2), vec![0.5, -0.25]);
    }

    #[test]
    fn normalize_gives_unit_length() {
        let mut vector = vec![3.0, 4.0];
        l2_normalize(&mut vector);
        assert!((vector[0] - 0.6).abs() < 1e-6);
        assert!((vector[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn normalize_leaves_zero_alone() {
        let mut vector = vec![0.0, 0.0, 0.0];
        l2_normalize(&mut vector);
        assert_eq!(vector, vec![0.0, 0.0, 0.0]);
    }

    #[test]
    fn cosine_of_parallel_and_orthogonal() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
