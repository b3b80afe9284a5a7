//! Score-CAM in `eval` and `classify`: its cost said before the work on a CPU, a progress
//! line of passes on stderr, and Ctrl-C as a request to stop before the next batch.

use std::ops::ControlFlow;

use super::faithfulness::{Interrupt, PassLine};
use crate::model::Classifier;
use crate::pipeline;

/// The forward passes Score-CAM runs an image with `classifier`: one a layer-4 channel.
pub fn passes_an_image(classifier: &Classifier) -> usize {
    classifier.model().architecture().feature_channels()
}

/// On a CPU, one line saying what Score-CAM costs for `images` images: the work is not
/// refused, but a user should know before waiting for it.
fn say_cost(classifier: &Classifier, images: usize) {
    if classifier.device().is_cuda() || images == 0 {
        return;
    }
    let passes = passes_an_image(classifier);
    let batch = pipeline::score_cam_batch(classifier.device());
    let each = if images == 1 {
        "the image".to_string()
    } else {
        format!("each of {images} images")
    };
    eprintln!(
        "camview: Score-CAM runs {passes} forward passes an image on the CPU (one a layer-4 \
         channel, {batch} a batch): roughly {passes} × one pass's time for {each} (a GPU is \
         far faster; Ctrl-C stops between batches)"
    );
}

/// Score-CAM over several images: Ctrl-C caught while it lives, and the progress line
/// (`Score-CAM image 3/40: 512/2048 passes`; on a terminal rewritten in place, elsewhere
/// a line an image finished).
pub struct Progress {
    interrupt: Interrupt,
    line: PassLine,
    images: usize,
}

impl Progress {
    /// Ctrl-C caught, then the cost said (on a CPU) for `images` images.
    pub fn start(classifier: &Classifier, images: usize) -> Self {
        let interrupt = Interrupt::catch();
        say_cost(classifier, images);
        Self {
            interrupt,
            line: PassLine::new(),
            images,
        }
    }

    /// Image `image` (0-based) is `done` of `total` passes in; `Break` once Ctrl-C asked to
    /// stop.
    pub fn update(&mut self, image: usize, done: usize, total: usize) -> ControlFlow<()> {
        let text = format!(
            "Score-CAM image {}/{}: {done}/{total} passes",
            image + 1,
            self.images
        );
        if !self.line.show(&text) && done == total && total > 0 {
            eprintln!("camview: {text}");
        }
        if self.interrupt.requested() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// Whether Ctrl-C asked to stop.
    pub fn stopped(&self) -> bool {
        self.interrupt.requested()
    }

    /// Clears the line (before other output, and at the end).
    pub fn clear(&mut self) {
        self.line.clear();
    }
}
