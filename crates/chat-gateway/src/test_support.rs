//! Helpers shared by the unit tests of several modules.

use http::HeaderMap;

/// A header map from name/value pairs; repeated names are appended.
pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, value.parse().unwrap());
    }
    map
}
