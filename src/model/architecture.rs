//! Which ResNet a checkpoint holds, read from its tensors' names and shapes alone: the block
//! type, blocks per stage, widths and groups of torchvision's ResNet, ResNeXt and Wide ResNet,
//! timm's ResNets (the `d` variants' deep stem and average-pool shortcut included), and
//! transformers' `ResNetForImageClassification`, whose names are first rewritten into
//! torchvision's ([`torchvision_name`]).
//!
//! What the tensors cannot say comes from outside: the stride layout (v1 strides in the first
//! 1×1 conv, v1.5 in the 3×3), and whether the first stage strides (transformers'
//! `downsample_in_first_stage`). A checkpoint of another family is named in one line.

use std::collections::BTreeMap;
use std::fmt;

use super::weights::Arch;

/// A residual block's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Block {
    /// Two 3×3 convolutions (ResNet-18/34).
    Basic,
    /// 1×1 reduce, 3×3 (grouped in ResNeXt), 1×1 expand (ResNet-50 and deeper).
    Bottleneck,
}

/// The layers before the first stage (a max pool 3×3/2 follows either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// One k×k stride-2 convolution (`conv1`, 7×7 in every ResNet of the hubs).
    Plain { kernel: usize },
    /// timm's deep stem: 3×3/2, 3×3, 3×3 (`conv1.0`, `conv1.3`, `conv1.6`), these widths
    /// before the last.
    Deep { widths: [usize; 2] },
}

/// How a block that changes shape forms its shortcut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shortcut {
    /// A strided 1×1 convolution (`downsample.0`, batch norm `downsample.1`).
    Conv,
    /// timm's `avg_down`: a 2×2 average pool (ceil mode, padding not counted) where the block
    /// strides, then a 1×1 convolution (`downsample.1`, batch norm `downsample.2`).
    AvgPool,
}

/// A ResNet as its tensors describe it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Architecture {
    pub block: Block,
    /// Blocks in each stage.
    pub depths: Vec<usize>,
    /// The stride of each stage's first block.
    pub strides: Vec<usize>,
    pub stem: Stem,
    /// Channels out of the stem.
    pub stem_channels: usize,
    /// Channels of each stage's 3×3 convolutions (a bottleneck's inner width).
    pub widths: Vec<usize>,
    /// Channels out of each stage.
    pub outputs: Vec<usize>,
    /// Groups of the 3×3 convolutions (ResNeXt's cardinality; 1 otherwise).
    pub groups: usize,
    pub shortcut: Shortcut,
    /// Where a bottleneck strides (basic blocks stride in their first 3×3 either way).
    pub layout: Arch,
    /// Outputs of the classifier.
    pub classes: usize,
}

/// Why a set of tensors is no ResNet camview can run; one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotResNet {
    #[error(
        "it holds {found}: camview reads ResNet, ResNeXt and Wide ResNet checkpoints from \
         torchvision, timm and transformers"
    )]
    OtherFamily { found: String },
    #[error(
        "it is a ResNet with modules camview does not run ({}{}): camview reads plain ResNet, \
         ResNeXt and Wide ResNet blocks",
        quote_list(.names),
        if *.count > .names.len() { format!(", {} tensors in all", .count) } else { String::new() }
    )]
    ExtraModules { names: Vec<String>, count: usize },
    #[error("tensor `{tensor}` has shape {found:?}, expected {expected}")]
    Shape {
        tensor: String,
        expected: String,
        found: Vec<usize>,
    },
    #[error("tensor `{0}` is missing")]
    Missing(String),
}

/// Backquoted, comma-separated names.
fn quote_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names → shapes of a checkpoint's tensors.
pub type Shapes = BTreeMap<String, Vec<usize>>;

impl Architecture {
    /// Recognises the ResNet that `shapes` (torchvision-named) describe. `layout` is where
    /// bottlenecks stride; `strides` the stride of each stage, if known (else 1, then 2).
    pub fn recognise(
        shapes: &Shapes,
        layout: Arch,
        strides: Option<&[usize]>,
    ) -> Result<Self, NotResNet> {
        if !shapes.contains_key("conv1.weight") && !shapes.contains_key("conv1.0.weight")
            || !shapes.contains_key("layer1.0.conv1.weight")
        {
            return Err(NotResNet::OtherFamily {
                found: identify(shapes),
            });
        }
        let extra: Vec<&String> = shapes.keys().filter(|n| !is_resnet_tensor(n)).collect();
        if !extra.is_empty() {
            return Err(NotResNet::ExtraModules {
                names: extra.iter().take(3).map(|s| s.to_string()).collect(),
                count: extra.len(),
            });
        }
        let shape = |name: &str| -> Result<&[usize], NotResNet> {
            shapes
                .get(name)
                .map(Vec::as_slice)
                .ok_or_else(|| NotResNet::Missing(name.to_string()))
        };
        let conv = |name: &str, kernel: usize| -> Result<(usize, usize), NotResNet> {
            let tensor = format!("{name}.weight");
            match *shape(&tensor)? {
                [out, inp, kh, kw] if kh == kernel && kw == kernel => Ok((out, inp)),
                ref found => Err(NotResNet::Shape {
                    tensor,
                    expected: format!("[out, in, {kernel}, {kernel}]"),
                    found: found.to_vec(),
                }),
            }
        };
        let (stem, stem_channels) = if shapes.contains_key("conv1.weight") {
            let found = shape("conv1.weight")?;
            let kernel = found.get(2).copied().unwrap_or(0);
            let (out, _) = conv("conv1", kernel)?;
            (Stem::Plain { kernel }, out)
        } else {
            let (first, _) = conv("conv1.0", 3)?;
            let (second, _) = conv("conv1.3", 3)?;
            let (out, _) = conv("conv1.6", 3)?;
            (
                Stem::Deep {
                    widths: [first, second],
                },
                out,
            )
        };
        let block = if shapes.contains_key("layer1.0.conv3.weight") {
            Block::Bottleneck
        } else {
            Block::Basic
        };
        let mut depths = Vec::new();
        while shapes.contains_key(&format!("layer{}.0.conv1.weight", depths.len() + 1)) {
            let stage = depths.len() + 1;
            let blocks = (0..)
                .take_while(|b| shapes.contains_key(&format!("layer{stage}.{b}.conv1.weight")))
                .count();
            depths.push(blocks);
        }
        let mut widths = Vec::new();
        let mut outputs = Vec::new();
        let mut groups = 1;
        for stage in 1..=depths.len() {
            let (width, per_group) = conv(&format!("layer{stage}.0.conv2"), 3)?;
            if per_group == 0 || !width.is_multiple_of(per_group) {
                return Err(NotResNet::Shape {
                    tensor: format!("layer{stage}.0.conv2.weight"),
                    expected: "[width, width / groups, 3, 3]".into(),
                    found: shape(&format!("layer{stage}.0.conv2.weight"))?.to_vec(),
                });
            }
            if stage == 1 {
                groups = width / per_group;
            }
            let out = match block {
                Block::Basic => width,
                Block::Bottleneck => conv(&format!("layer{stage}.0.conv3"), 1)?.0,
            };
            widths.push(width);
            outputs.push(out);
        }
        let shortcut = if shapes
            .iter()
            .any(|(n, s)| n.ends_with(".downsample.1.weight") && s.len() == 4)
        {
            Shortcut::AvgPool
        } else {
            Shortcut::Conv
        };
        let classes = match shape("fc.weight")? {
            &[classes, features] if Some(&features) == outputs.last() => classes,
            found => {
                return Err(NotResNet::Shape {
                    tensor: "fc.weight".into(),
                    expected: format!("[classes, {}]", outputs.last().unwrap_or(&0)),
                    found: found.to_vec(),
                });
            }
        };
        let strides = match strides {
            Some(s) if s.len() == depths.len() => s.to_vec(),
            _ => (0..depths.len())
                .map(|s| if s == 0 { 1 } else { 2 })
                .collect(),
        };
        Ok(Self {
            block,
            depths,
            strides,
            stem,
            stem_channels,
            widths,
            outputs,
            groups,
            shortcut,
            layout,
            classes,
        })
    }

    /// Channels of the last stage's feature map, the classifier's input.
    pub fn feature_channels(&self) -> usize {
        self.outputs.last().copied().unwrap_or(self.stem_channels)
    }

    /// Spatial size of the last stage's map for an input of `side` pixels: the stem, the max
    /// pool and every strided stage halve it, rounding up.
    pub fn feature_side(&self, side: usize) -> usize {
        let halvings = 2 + self.strides.iter().filter(|&&s| s == 2).count();
        (0..halvings).fold(side, |s, _| s.div_ceil(2))
    }

    /// Layers with weights, as the model names count them (ResNet-50: 49 convolutions + fc).
    pub fn depth(&self) -> usize {
        let per_block = match self.block {
            Block::Basic => 2,
            Block::Bottleneck => 3,
        };
        per_block * self.depths.iter().sum::<usize>() + 2
    }

    /// The name the model zoos give it: `ResNet-50`, `ResNet-50-D`, `ResNeXt-50 32x4d`,
    /// `Wide ResNet-50-2`, with `(v1)` for the original stride layout.
    pub fn name(&self) -> String {
        let depth = self.depth();
        let d = if matches!(self.stem, Stem::Deep { .. }) && self.shortcut == Shortcut::AvgPool {
            "-D"
        } else if matches!(self.stem, Stem::Deep { .. }) || self.shortcut == Shortcut::AvgPool {
            " (variant)"
        } else {
            ""
        };
        // A bottleneck's 3×3 is a quarter of its output in ResNet, more in wide ones.
        let base = match self.block {
            Block::Basic => 1,
            Block::Bottleneck => self.outputs[0] / 4,
        };
        let mut name = if self.groups > 1 {
            format!(
                "ResNeXt-{depth}{d} {}x{}d",
                self.groups,
                self.widths[0] / self.groups * 64 / base.max(1)
            )
        } else if self.block == Block::Bottleneck && self.widths[0] > base && base > 0 {
            format!("Wide ResNet-{depth}-{}{d}", self.widths[0] / base)
        } else {
            format!("ResNet-{depth}{d}")
        };
        if self.block == Block::Bottleneck && self.layout == Arch::V1 {
            name.push_str(" (v1)");
        }
        name
    }

    /// One line for `model info` and status lines: the name, then what it is made of.
    pub fn summary(&self) -> String {
        let join = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join("-");
        let block = match self.block {
            Block::Basic => "basic",
            Block::Bottleneck => "bottleneck",
        };
        let groups = if self.groups > 1 {
            format!(", {} groups", self.groups)
        } else {
            String::new()
        };
        format!(
            "{}: {block} blocks {}, widths {}{groups}, {} features, {} classes",
            self.name(),
            join(&self.depths),
            join(&self.widths),
            self.feature_channels(),
            self.classes
        )
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Whether `name` is a tensor of a plain torchvision-named ResNet.
fn is_resnet_tensor(name: &str) -> bool {
    let param = |rest: &str| {
        matches!(
            rest,
            "weight" | "bias" | "running_mean" | "running_var" | "num_batches_tracked"
        )
    };
    let parts: Vec<&str> = name.split('.').collect();
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        ["conv1" | "bn1" | "fc", p] => param(p),
        ["conv1", "0" | "1" | "3" | "4" | "6", p] => param(p),
        [layer, block, module, p] => {
            layer.strip_prefix("layer").is_some_and(number)
                && number(block)
                && matches!(*module, "conv1" | "conv2" | "conv3" | "bn1" | "bn2" | "bn3")
                && param(p)
        }
        [layer, block, "downsample", "0" | "1" | "2", p] => {
            layer.strip_prefix("layer").is_some_and(number) && number(block) && param(p)
        }
        _ => false,
    }
}

/// What a checkpoint that is no ResNet seems to hold, with the tensors that say so.
fn identify(shapes: &Shapes) -> String {
    let has = |needle: &str| shapes.keys().find(|n| n.contains(needle));
    let families: [(&str, &[&str]); 8] = [
        (
            "a Vision Transformer (ViT)",
            &["cls_token", "patch_embed.", "vit.embeddings"],
        ),
        ("a Swin Transformer", &["swin.", "relative_position"]),
        (
            "a ConvNeXt",
            &["convnext.", "conv_dw", "stages.0.downsample"],
        ),
        (
            "an EfficientNet or MobileNet",
            &["conv_stem.", "efficientnet.", "features.1.0.block"],
        ),
        ("a DenseNet", &["denseblock"]),
        ("a VGG", &["features.0.weight"]),
        ("a RegNet", &["s1.b1.", "regnet."]),
        ("an Inception network", &["Mixed_", "inception"]),
    ];
    for (family, needles) in families {
        if let Some(name) = needles.iter().find_map(|n| has(n)) {
            return format!("{family} (tensor `{name}`)");
        }
    }
    let first: Vec<String> = shapes.keys().take(3).cloned().collect();
    if first.is_empty() {
        return "no tensors".into();
    }
    match shapes.len() {
        1 => format!("1 tensor, {}", quote_list(&first)),
        n => format!(
            "{n} tensors starting {}{}",
            quote_list(&first),
            if n > 3 { ", …" } else { "" }
        ),
    }
}

/// The torchvision name of a transformers `ResNetForImageClassification` (or `ResNetModel`)
/// tensor, or `None` for a name that is not one of them.
pub fn torchvision_name(name: &str) -> Option<String> {
    let name = name.strip_prefix("resnet.").unwrap_or(name);
    // `convolution.weight` → the conv, `normalization.X` → its batch norm.
    let split = |rest: &str| -> Option<(bool, String)> {
        let (module, param) = rest.split_once('.')?;
        match module {
            "convolution" => Some((true, param.to_string())),
            "normalization" => Some((false, param.to_string())),
            _ => None,
        }
    };
    if let Some(rest) = name.strip_prefix("embedder.embedder.") {
        let (conv, param) = split(rest)?;
        return Some(format!("{}.{param}", if conv { "conv1" } else { "bn1" }));
    }
    if let Some(rest) = name.strip_prefix("classifier.1.") {
        return Some(format!("fc.{rest}"));
    }
    let rest = name.strip_prefix("encoder.stages.")?;
    let (stage, rest) = rest.split_once('.')?;
    let stage: usize = stage.parse().ok()?;
    let rest = rest.strip_prefix("layers.")?;
    let (block, rest) = rest.split_once('.')?;
    let block: usize = block.parse().ok()?;
    let prefix = format!("layer{}.{block}", stage + 1);
    if let Some(rest) = rest.strip_prefix("shortcut.") {
        let (conv, param) = split(rest)?;
        return Some(format!("{prefix}.downsample.{}.{param}", u8::from(!conv)));
    }
    let rest = rest.strip_prefix("layer.")?;
    let (index, rest) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    let (conv, param) = split(rest)?;
    let module = if conv { "conv" } else { "bn" };
    Some(format!("{prefix}.{module}{}.{param}", index + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names and shapes of a torchvision-layout network, as its constructor makes them.
    fn torchvision(block: Block, depths: &[usize], groups: usize, base: usize) -> Shapes {
        let mut s = Shapes::new();
        let mut add = |name: String, shape: Vec<usize>| {
            s.insert(name, shape);
        };
        let bn = |add: &mut dyn FnMut(String, Vec<usize>), name: &str, c: usize| {
            for p in ["weight", "bias", "running_mean", "running_var"] {
                add(format!("{name}.{p}"), vec![c]);
            }
        };
        add("conv1.weight".into(), vec![64, 3, 7, 7]);
        bn(&mut add, "bn1", 64);
        let mut in_c = 64;
        for (stage, &blocks) in depths.iter().enumerate() {
            let planes = 64 << stage;
            for b in 0..blocks {
                let p = format!("layer{}.{b}", stage + 1);
                let out = match block {
                    Block::Basic => {
                        add(format!("{p}.conv1.weight"), vec![planes, in_c, 3, 3]);
                        add(format!("{p}.conv2.weight"), vec![planes, planes, 3, 3]);
                        bn(&mut add, &format!("{p}.bn1"), planes);
                        bn(&mut add, &format!("{p}.bn2"), planes);
                        planes
                    }
                    Block::Bottleneck => {
                        let width = planes * base / 64 * groups;
                        add(format!("{p}.conv1.weight"), vec![width, in_c, 1, 1]);
                        add(
                            format!("{p}.conv2.weight"),
                            vec![width, width / groups, 3, 3],
                        );
                        add(format!("{p}.conv3.weight"), vec![planes * 4, width, 1, 1]);
                        bn(&mut add, &format!("{p}.bn1"), width);
                        bn(&mut add, &format!("{p}.bn2"), width);
                        bn(&mut add, &format!("{p}.bn3"), planes * 4);
                        planes * 4
                    }
                };
                if b == 0 && (stage > 0 || in_c != out) {
                    add(format!("{p}.downsample.0.weight"), vec![out, in_c, 1, 1]);
                    bn(&mut add, &format!("{p}.downsample.1"), out);
                }
                in_c = out;
            }
        }
        add("fc.weight".into(), vec![1000, in_c]);
        add("fc.bias".into(), vec![1000]);
        s
    }

    #[test]
    fn torchvision_models_are_recognised_by_their_shapes() {
        let cases = [
            (Block::Basic, &[2, 2, 2, 2][..], 1, 64, "ResNet-18", 512),
            (Block::Basic, &[3, 4, 6, 3], 1, 64, "ResNet-34", 512),
            (Block::Bottleneck, &[3, 4, 6, 3], 1, 64, "ResNet-50", 2048),
            (Block::Bottleneck, &[3, 8, 36, 3], 1, 64, "ResNet-152", 2048),
            (
                Block::Bottleneck,
                &[3, 4, 6, 3],
                32,
                4,
                "ResNeXt-50 32x4d",
                2048,
            ),
            (
                Block::Bottleneck,
                &[3, 4, 23, 3],
                64,
                4,
                "ResNeXt-101 64x4d",
                2048,
            ),
            (
                Block::Bottleneck,
                &[3, 4, 6, 3],
                1,
                128,
                "Wide ResNet-50-2",
                2048,
            ),
        ];
        for (block, depths, groups, base, name, features) in cases {
            let shapes = torchvision(block, depths, groups, base);
            let arch = Architecture::recognise(&shapes, Arch::V1_5, None).unwrap();
            assert_eq!(arch.name(), name);
            assert_eq!(arch.block, block, "{name}");
            assert_eq!(arch.depths, depths, "{name}");
            assert_eq!(arch.groups, groups, "{name}");
            assert_eq!(arch.feature_channels(), features, "{name}");
            assert_eq!(arch.strides, [1, 2, 2, 2]);
            assert_eq!(arch.classes, 1000);
            assert_eq!(arch.feature_side(224), 7);
        }
    }

    #[test]
    fn transformers_names_become_torchvision_names() {
        let cases = [
            (
                "resnet.embedder.embedder.convolution.weight",
                "conv1.weight",
            ),
            (
                "resnet.embedder.embedder.normalization.running_var",
                "bn1.running_var",
            ),
            (
                "resnet.encoder.stages.0.layers.0.shortcut.convolution.weight",
                "layer1.0.downsample.0.weight",
            ),
            (
                "resnet.encoder.stages.3.layers.2.shortcut.normalization.bias",
                "layer4.2.downsample.1.bias",
            ),
            (
                "resnet.encoder.stages.1.layers.3.layer.2.convolution.weight",
                "layer2.3.conv3.weight",
            ),
            (
                "resnet.encoder.stages.2.layers.0.layer.0.normalization.running_mean",
                "layer3.0.bn1.running_mean",
            ),
            ("classifier.1.weight", "fc.weight"),
        ];
        for (hf, tv) in cases {
            assert_eq!(torchvision_name(hf).as_deref(), Some(tv), "{hf}");
        }
        assert_eq!(torchvision_name("vit.embeddings.cls_token"), None);
    }

    #[test]
    fn other_families_and_extra_modules_are_named() {
        let mut vit = Shapes::new();
        vit.insert("cls_token".into(), vec![1, 1, 8]);
        vit.insert("blocks.0.attn.qkv.weight".into(), vec![24, 8]);
        let e = Architecture::recognise(&vit, Arch::V1_5, None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("it holds a Vision Transformer (ViT) (tensor `cls_token`): camview"),
            "{e}"
        );
        let mut se = torchvision(Block::Basic, &[2, 2, 2, 2], 1, 64);
        se.insert("layer1.0.se.fc1.weight".into(), vec![4, 64, 1, 1]);
        let e = Architecture::recognise(&se, Arch::V1_5, None).unwrap_err();
        assert!(e.to_string().contains("`layer1.0.se.fc1.weight`"), "{e}");
        let mut odd = Shapes::new();
        odd.insert("a".into(), vec![1]);
        let e = Architecture::recognise(&odd, Arch::V1_5, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "it holds 1 tensor, `a`: camview reads ResNet, ResNeXt and Wide ResNet \
             checkpoints from torchvision, timm and transformers"
        );
    }
}
