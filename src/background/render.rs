//! The render thread: decodes photos, draws the CAM overlay at the image pane's size and
//! encodes it for the terminal's graphics protocol, so the UI thread only copies cells.

use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;
use ratatui::layout::Size;
use ratatui_image::protocol::Protocol;

use crate::analysis::ImageKey;
use crate::jobs::{Mailbox, Panicked, Worker, contain_panic};
use crate::log;
use crate::model::Analysis;
use crate::model::cam::BBox;
use crate::model::preprocess::{ImageError, load_rgb};
use crate::overlay::scale;
use crate::overlay::{self, Style, View};
use crate::term::Graphics;
use crate::term::place::{EncodeError, Placement, encode, placement};

/// One picture to prepare for the image pane.
#[derive(Debug, Clone)]
pub struct RenderRequest {
    /// Answers carry it back; the UI keeps only the answer to its latest request.
    pub ticket: u64,
    pub key: ImageKey,
    pub analysis: Option<Arc<Analysis>>,
    /// Which of the analysis' classes to draw.
    pub class: usize,
    pub style: Style,
    /// The pane's inner size in cells.
    pub cells: Size,
    /// Truth boxes to draw with the CAM box, in photo pixels.
    pub truth_boxes: Vec<BBox>,
}

/// A picture ready to draw.
#[derive(Clone)]
pub struct Rendered {
    pub protocol: Protocol,
    /// Size of the photo file in pixels.
    pub original: (u32, u32),
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("cells", &self.protocol.size())
            .field("original", &self.original)
            .finish()
    }
}

/// Why a picture could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Image(Arc<ImageError>),
    #[error(transparent)]
    Encode(Arc<EncodeError>),
    #[error(transparent)]
    Bug(#[from] Panicked),
}

/// The answer to a [`RenderRequest`].
#[derive(Debug, Clone)]
pub struct RenderEvent {
    pub ticket: u64,
    pub key: ImageKey,
    pub result: Result<Rendered, RenderError>,
}

/// Decoded photos kept for quick re-rendering (style changes, going back).
const PHOTO_CACHE: usize = 6;

struct CachedPhoto {
    key: ImageKey,
    original: Arc<RgbImage>,
    /// The photo scaled for the pane, and the pixel bound it was scaled to.
    fitted: Option<((u32, u32), RgbImage)>,
}

/// What the render thread is asked to do.
enum Job {
    /// Prepare this picture and send it back.
    Show(RenderRequest),
    /// Prepare these pictures (the neighbours) for later, while nothing else is asked.
    Prepare(Vec<RenderRequest>),
}

/// The UI's handle on the render thread.
pub struct Renderer {
    worker: Worker<Job>,
}

impl Renderer {
    /// Starts the thread; answers go to `notify`, which returns false once nobody listens.
    pub fn spawn(
        graphics: impl Into<Graphics>,
        notify: impl Fn(RenderEvent) -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let graphics = graphics.into();
        let worker = Worker::spawn("camview-render", move |inbox: &Mailbox<Job>| {
            let mut studio = Studio {
                graphics,
                photos: Vec::new(),
                pictures: Pictures::default(),
            };
            while let Some(job) = inbox.take() {
                match job {
                    Job::Show(request) => {
                        let result = studio.picture(&request);
                        let event = RenderEvent {
                            ticket: request.ticket,
                            key: request.key,
                            result,
                        };
                        if !notify(event) {
                            return;
                        }
                    }
                    Job::Prepare(requests) => {
                        for request in requests {
                            // Errors show when the picture is asked for.
                            let _ = studio.picture(&request);
                            if inbox.has_job() {
                                break;
                            }
                        }
                    }
                }
            }
        })?;
        Ok(Self { worker })
    }

    /// Asks for a picture; the request replaces any job still waiting.
    pub fn send(&self, request: RenderRequest) {
        self.worker.send(Job::Show(request));
    }

    /// Asks for pictures to be ready for later (the neighbours of the one shown). A picture
    /// asked for and not yet made keeps its place: only other work is replaced.
    pub fn prepare(&self, requests: Vec<RenderRequest>) {
        self.worker.offer(Job::Prepare(requests), |waiting| {
            matches!(waiting, Job::Show(_))
        });
    }
}

/// The render thread's state: the terminal's graphics and the caches.
struct Studio {
    graphics: Graphics,
    photos: Vec<CachedPhoto>,
    pictures: Pictures,
}

impl Studio {
    /// The picture for `request`, from the cache or made now.
    fn picture(&mut self, request: &RenderRequest) -> Result<Rendered, RenderError> {
        let started = Instant::now();
        if let Some(done) = self.pictures.get(request) {
            return Ok(done);
        }
        let result = contain_panic(|| render(&self.graphics, &mut self.photos, request));
        log::debug(&format!(
            "render #{} of {} in {:?}",
            request.ticket,
            request.key.path.display(),
            started.elapsed()
        ));
        if let Ok(done) = &result {
            self.pictures.put(request, done.clone());
        }
        result
    }
}

/// Finished pictures kept for going back to a recent image (or style) at no cost.
const PICTURE_CACHE: usize = 16;

/// Recently finished pictures, by everything that decides what they look like.
#[derive(Default)]
struct Pictures(Vec<(RenderRequest, Rendered)>);

impl Pictures {
    fn same(a: &RenderRequest, b: &RenderRequest) -> bool {
        a.key == b.key
            && a.class == b.class
            && a.style == b.style
            && a.cells == b.cells
            && a.truth_boxes == b.truth_boxes
            // The app keeps every analysis it received, so the pointer names one.
            && a.analysis.as_ref().map(Arc::as_ptr) == b.analysis.as_ref().map(Arc::as_ptr)
    }

    fn get(&mut self, request: &RenderRequest) -> Option<Rendered> {
        let at = self.0.iter().position(|(r, _)| Self::same(r, request))?;
        let entry = self.0.remove(at);
        let done = entry.1.clone();
        self.0.push(entry);
        Some(done)
    }

    fn put(&mut self, request: &RenderRequest, done: Rendered) {
        if self.0.len() >= PICTURE_CACHE {
            self.0.remove(0);
        }
        self.0.push((request.clone(), done));
    }
}

fn render(
    graphics: &Graphics,
    cache: &mut Vec<CachedPhoto>,
    request: &RenderRequest,
) -> Result<Rendered, RenderError> {
    let at = match cache.iter().position(|c| c.key == request.key) {
        Some(i) => i,
        None => {
            let photo = load_rgb(&request.key.path).map_err(|e| RenderError::Image(Arc::new(e)))?;
            if cache.len() >= PHOTO_CACHE {
                cache.remove(0);
            }
            cache.push(CachedPhoto {
                key: request.key.clone(),
                original: Arc::new(photo),
                fitted: None,
            });
            cache.len() - 1
        }
    };
    // Most recently used last.
    let mut entry = cache.remove(at);
    let original = entry.original.dimensions();
    let Placement {
        cells,
        pixels: size,
    } = placement(graphics, original, request.cells);
    let fitted = match entry.fitted.take() {
        Some((s, img)) if s == size => img,
        _ => scale(&entry.original, size),
    };
    let mut picture = overlay::render(
        &fitted,
        original,
        request.analysis.as_deref(),
        request.class,
        request.style,
    );
    if request.style.bbox && request.style.view != View::Grid {
        overlay::draw_truth_boxes(&mut picture, original, &request.truth_boxes);
    }
    entry.fitted = Some((size, fitted));
    cache.push(entry);
    let protocol =
        encode(&graphics.picker, picture, cells).map_err(|e| RenderError::Encode(Arc::new(e)))?;
    Ok(Rendered { protocol, original })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::place::encode;
    use ratatui_image::picker::Picker;

    #[test]
    fn finished_pictures_are_found_by_everything_that_shapes_them() {
        let request = RenderRequest {
            ticket: 1,
            key: ImageKey {
                path: "a.png".into(),
                size: 0,
                modified: None,
            },
            analysis: None,
            class: 0,
            style: Style::default(),
            cells: Size::new(4, 2),
            truth_boxes: Vec::new(),
        };
        let picture = encode(&Picker::halfblocks(), RgbImage::new(40, 40), request.cells).unwrap();
        let mut pictures = Pictures::default();
        pictures.put(
            &request,
            Rendered {
                protocol: picture,
                original: (40, 40),
            },
        );
        let again = RenderRequest {
            ticket: 2,
            ..request.clone()
        };
        assert_eq!(pictures.get(&again).unwrap().original, (40, 40));
        let restyled = RenderRequest {
            style: Style {
                bbox: true,
                ..Style::default()
            },
            ..request.clone()
        };
        assert!(pictures.get(&restyled).is_none());
        let resized = RenderRequest {
            cells: Size::new(5, 2),
            ..request
        };
        assert!(pictures.get(&resized).is_none());
    }
}
