//! Moving a selection through a list: shared by the study's panes and the
//! graph explorer's state, which the panes depend on (so it lives below both).

/// `value` moved by `delta` and kept within `0..len`.
pub fn moved(value: usize, delta: i64, len: usize) -> usize {
    (value as i64 + delta).clamp(0, len.max(1) as i64 - 1) as usize
}
