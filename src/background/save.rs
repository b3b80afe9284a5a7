//! `s` in the browser: the picture on screen written as a PNG at the photo's full size, on a
//! thread of its own (decoding and blending a large photo takes a while), named after the
//! photo, the view and the class, so that saving another class or view keeps the first.

use std::path::PathBuf;
use std::sync::Arc;

use crate::jobs::Panicked;
use crate::model::Analysis;
use crate::model::cam::BBox;
use crate::model::cam_methods::CamMethod;
use crate::model::preprocess::{ImageError, load_rgb};
use crate::overlay::{self, Style, View};

/// What to save and where.
#[derive(Debug, Clone)]
pub struct SaveRequest {
    pub photo: PathBuf,
    /// The maps drawn are the analysis's (made by `method`).
    pub analysis: Arc<Analysis>,
    pub method: CamMethod,
    /// Index into the analysis's top classes.
    pub class: usize,
    pub style: Style,
    pub dir: PathBuf,
    /// Truth boxes drawn with the CAM box, in photo pixels.
    pub truth_boxes: Vec<BBox>,
}

/// Why a picture was not saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The photo cannot be read again; the error names it.
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("cannot save the picture")]
    Write(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot start saving")]
    Start(#[source] std::io::Error),
    #[error(transparent)]
    Bug(#[from] Panicked),
}

impl SaveRequest {
    /// Where the PNG goes: `<dir>/<photo stem>.<view>.<class index>-<label>.png`, the view
    /// one of `overlay`, `heatmap` and `grid` (whose class is the framed one)
    /// (`chelsea.overlay.285-Egyptian_cat.png`; the index tells apart the labels ImageNet
    /// has twice, such as crane), a method other than CAM named after the view
    /// (`chelsea.overlay.gradcam++.285-Egyptian_cat.png`); the original view names no class.
    /// Saving the same view, method and class again (another colormap, say) replaces the
    /// file.
    pub fn destination(&self) -> PathBuf {
        let stem = self
            .photo
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let name = match self.style.view {
            View::Original => format!("{stem}.original.png"),
            view => {
                let class = self.analysis.top.get(self.class).map_or_else(
                    || "class".to_string(),
                    |p| format!("{}-{}", p.index, file_safe(&p.label)),
                );
                let view = match view {
                    View::Heat => "heatmap",
                    View::Grid => "grid",
                    _ => "overlay",
                };
                let method = match self.method {
                    CamMethod::Cam => String::new(),
                    method => format!("{}.", method.name()),
                };
                format!("{stem}.{view}.{method}{class}.png")
            }
        };
        self.dir.join(name)
    }

    /// Decodes the photo again, draws the picture at its full size and writes it; returns
    /// where it went, or why it could not.
    pub fn run(self) -> Result<PathBuf, SaveError> {
        let out = self.destination();
        let img = load_rgb(&self.photo)?;
        let mut picture = overlay::render(
            &img,
            img.dimensions(),
            Some(&self.analysis),
            self.class,
            self.style,
        );
        if self.style.bbox && self.style.view != View::Grid {
            overlay::draw_truth_boxes(&mut picture, img.dimensions(), &self.truth_boxes);
        }
        overlay::write_png(&picture, &out).map_err(|e| SaveError::Write(e.into()))?;
        Ok(out)
    }
}

/// `label` with everything but letters, digits and `-` turned into `_`, so any label makes
/// one plain file name (`German_short-haired_pointer`).
fn file_safe(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::Prediction;

    fn request(view: View, label: &str) -> SaveRequest {
        let analysis = Analysis {
            top: vec![Prediction {
                rank: 1,
                index: 285,
                label: label.into(),
                prob: 0.77,
            }],
            cams: Vec::new(),
            input: (224, 224),
            region: crate::model::preprocess::Region {
                x0: 0.0,
                y0: 0.0,
                x1: 224.0,
                y1: 224.0,
            },
            elapsed: Default::default(),
        };
        SaveRequest {
            photo: "photos/chelsea.v2.png".into(),
            analysis: Arc::new(analysis),
            method: CamMethod::Cam,
            class: 0,
            style: Style {
                view,
                ..Style::default()
            },
            dir: "out".into(),
            truth_boxes: Vec::new(),
        }
    }

    #[test]
    fn the_name_says_photo_view_and_class() {
        assert_eq!(
            request(View::Overlay, "Egyptian cat").destination(),
            Path::new("out/chelsea.v2.overlay.285-Egyptian_cat.png")
        );
        assert_eq!(
            request(View::Heat, "German short-haired pointer").destination(),
            Path::new("out/chelsea.v2.heatmap.285-German_short-haired_pointer.png")
        );
        assert_eq!(
            request(View::Grid, "Egyptian cat").destination(),
            Path::new("out/chelsea.v2.grid.285-Egyptian_cat.png")
        );
        let layercam = SaveRequest {
            method: CamMethod::LayerCam,
            ..request(View::Heat, "Egyptian cat")
        };
        assert_eq!(
            layercam.destination(),
            Path::new("out/chelsea.v2.heatmap.layercam.285-Egyptian_cat.png")
        );
        assert_eq!(
            request(View::Original, "Egyptian cat").destination(),
            Path::new("out/chelsea.v2.original.png")
        );
        assert_eq!(
            request(View::Overlay, "crane/../x").destination(),
            Path::new("out/chelsea.v2.overlay.285-crane____x.png"),
            "a label never leaves the folder"
        );
    }
}
