//! The render thread: decodes photos, draws the CAM overlay at the image pane's size and
//! encodes it for the terminal's graphics protocol, so the UI thread only copies cells.

use std::sync::Arc;
use std::time::Instant;

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use ratatui::layout::Size;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::Protocol;
use ratatui_image::protocol::halfblocks::Halfblocks;
use ratatui_image::{FontSize, Resize};

use super::terminal::Graphics;

use crate::model::Analysis;
use crate::model::preprocess::load_rgb;
use crate::overlay::{self, Style};
use crate::worker::{ImageKey, Mailbox, contain_panic, log};

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

/// The answer to a [`RenderRequest`].
#[derive(Debug, Clone)]
pub struct RenderEvent {
    pub ticket: u64,
    pub key: ImageKey,
    pub result: Result<Rendered, String>,
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
    mailbox: Arc<Mailbox<Job>>,
}

impl Renderer {
    /// Starts the thread; answers go to `notify`, which returns false once nobody listens.
    pub fn spawn(
        graphics: impl Into<Graphics>,
        notify: impl Fn(RenderEvent) -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let graphics = graphics.into();
        let mailbox: Arc<Mailbox<Job>> = Arc::new(Mailbox::default());
        let inbox = Arc::clone(&mailbox);
        std::thread::Builder::new()
            .name("camview-render".into())
            .spawn(move || {
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
        Ok(Self { mailbox })
    }

    /// Asks for a picture; the request replaces any job still waiting.
    pub fn send(&self, request: RenderRequest) {
        self.mailbox.put(Job::Show(request));
    }

    /// Asks for pictures to be ready for later (the neighbours of the one shown). A picture
    /// asked for and not yet made keeps its place: only other work is replaced.
    pub fn prepare(&self, requests: Vec<RenderRequest>) {
        self.mailbox.offer(Job::Prepare(requests), |waiting| {
            matches!(waiting, Job::Show(_))
        });
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.mailbox.close();
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
    fn picture(&mut self, request: &RenderRequest) -> Result<Rendered, String> {
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
) -> Result<Rendered, String> {
    let at = match cache.iter().position(|c| c.key == request.key) {
        Some(i) => i,
        None => {
            let photo =
                load_rgb(&request.key.path).map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
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
    let picture = overlay::render(
        &fitted,
        original,
        request.analysis.as_deref(),
        request.class,
        request.style,
    );
    entry.fitted = Some((size, fitted));
    cache.push(entry);
    let protocol = encode(&graphics.picker, picture, cells)?;
    Ok(Rendered { protocol, original })
}

/// Where a picture goes when fitted into `room` cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The cells it covers.
    pub cells: Size,
    /// The size to scale it to before [`encode`]: the font's pixels over those cells, or for
    /// half blocks two pixels per cell (scaling to the font's pixels would only have them
    /// scaled down again, at ~20× the cost).
    pub pixels: (u32, u32),
}

/// The placement of a picture of `original` pixels, as large as `room` cells and the
/// terminal's largest picture allow.
pub fn placement(graphics: &Graphics, original: (u32, u32), room: Size) -> Placement {
    let picker = &graphics.picker;
    let font = picker.font_size();
    let mut bound = pixel_bound(room, font);
    if let Some((width, height)) = graphics.max_pixels {
        bound = (bound.0.min(width), bound.1.min(height));
    }
    let full = fitted_size(original, bound);
    let cells = Size::new(
        full.0
            .div_ceil(u32::from(font.width))
            .min(u32::from(room.width)) as u16,
        full.1
            .div_ceil(u32::from(font.height))
            .min(u32::from(room.height)) as u16,
    );
    let pixels = if picker.protocol_type() == ProtocolType::Halfblocks {
        (u32::from(cells.width), 2 * u32::from(cells.height))
    } else {
        full
    };
    Placement { cells, pixels }
}

/// Encodes `picture`, already scaled to its [`Placement`]'s pixels, for `picker`'s protocol
/// in `cells` (the encoders only ever shrink a picture).
pub fn encode(picker: &Picker, picture: RgbImage, cells: Size) -> Result<Protocol, String> {
    let picture = DynamicImage::ImageRgb8(picture);
    let protocol = if picker.protocol_type() == ProtocolType::Halfblocks {
        Halfblocks::new(picture, cells).map(Protocol::Halfblocks)
    } else {
        picker.new_protocol(picture, cells, Resize::Fit(None))
    };
    protocol.map_err(|e| format!("cannot encode the picture for the terminal: {e}"))
}

/// The size of `size` scaled to fill `bound` as far as its aspect ratio allows: small photos
/// are enlarged too, so the pane is used whatever the photo's size.
pub fn fitted_size(size: (u32, u32), bound: (u32, u32)) -> (u32, u32) {
    let (w, h) = (f64::from(size.0.max(1)), f64::from(size.1.max(1)));
    let s = (f64::from(bound.0) / w).min(f64::from(bound.1) / h);
    (
        ((w * s).round() as u32).clamp(1, bound.0.max(1)),
        ((h * s).round() as u32).clamp(1, bound.1.max(1)),
    )
}

/// `img` scaled to fill `bound` keeping its aspect ratio (see [`fitted_size`]).
pub fn fit(img: &RgbImage, bound: (u32, u32)) -> RgbImage {
    scale(img, fitted_size(img.dimensions(), bound))
}

/// `img` at exactly `size`.
pub fn scale(img: &RgbImage, size: (u32, u32)) -> RgbImage {
    if img.dimensions() == size {
        img.clone()
    } else {
        image::imageops::resize(img, size.0, size.1, FilterType::Triangle)
    }
}

/// The largest picture, in pixels, that `cells` can show.
pub fn pixel_bound(cells: Size, font: FontSize) -> (u32, u32) {
    (
        (u32::from(cells.width) * u32::from(font.width)).max(1),
        (u32::from(cells.height) * u32::from(font.height)).max(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_fills_the_bound_keeping_the_aspect_ratio() {
        let small = RgbImage::new(300, 200);
        assert_eq!(fit(&small, (900, 900)).dimensions(), (900, 600));
        let big = RgbImage::new(4000, 1000);
        assert_eq!(fit(&big, (800, 800)).dimensions(), (800, 200));
        assert_eq!(fit(&small, (300, 200)).dimensions(), (300, 200));
    }

    #[test]
    fn finished_pictures_are_found_by_everything_that_shapes_them() {
        let request = RenderRequest {
            ticket: 1,
            key: ImageKey {
                path: "a.png".into(),
                modified: None,
            },
            analysis: None,
            class: 0,
            style: Style::default(),
            cells: Size::new(4, 2),
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

    #[test]
    fn pictures_stay_within_the_largest_the_terminal_shows() {
        let mut picker = Picker::halfblocks();
        picker.set_protocol_type(ProtocolType::Sixel);
        let font = picker.font_size();
        assert_eq!((font.width, font.height), (10, 20));
        let room = Size::new(120, 43);
        let free = placement(&Graphics::from(picker.clone()), (451, 300), room);
        assert_eq!(free.pixels, (1200, 798));
        assert_eq!(free.cells, Size::new(120, 40));
        let xterm = Graphics {
            picker,
            max_pixels: Some((1000, 1000)),
        };
        let capped = placement(&xterm, (451, 300), room);
        assert_eq!(capped.pixels, (1000, 665));
        assert_eq!(capped.cells, Size::new(100, 34));
    }

    #[test]
    fn half_blocks_are_scaled_to_two_pixels_per_cell() {
        let graphics = Graphics::from(Picker::halfblocks());
        let placed = placement(&graphics, (451, 300), Size::new(100, 28));
        assert_eq!(placed.cells, Size::new(85, 28));
        assert_eq!(placed.pixels, (85, 56));
    }

    #[test]
    fn pixel_bound_is_cells_times_font() {
        let b = pixel_bound(Size::new(80, 30), FontSize::new(10, 20));
        assert_eq!(b, (800, 600));
    }
}
