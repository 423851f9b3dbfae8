//! Default paths for definitions new to the repository: readable, portable, collision-free and
//! always inside the sync root (contract part 2, "Where files go").
//!
//! A path is `<kind>/<name-path>.yaml`, every component made of `[a-z0-9-]` only, so nothing in
//! an untrusted name (`..`, `/`, `\`, NUL, `CON`) can reach the file system.

use std::collections::HashSet;

use crate::digest::Digest;
use crate::model::Key;

/// The longest component written, `.yaml` excluded.
pub const MAX_COMPONENT: usize = 80;

/// The stand-in for a name (or kind) with nothing readable in it, such as `日本語`.
const UNNAMED: &str = "unnamed";

/// Places new definitions, avoiding every path already taken (compared without regard to case).
///
/// Placement depends on what is already taken, so callers place keys in a fixed order (for
/// example sorted) to get the same paths on every run.
#[derive(Debug, Default)]
pub struct Layout {
    /// Lower-cased paths of every file, existing or placed.
    files: HashSet<String>,
    /// Lower-cased paths of every folder that holds one of `files`.
    dirs: HashSet<String>,
}

impl Layout {
    /// `existing`: every file path below the sync root, relative to it, `/`-separated.
    pub fn new<'a>(existing: impl IntoIterator<Item = &'a str>) -> Self {
        let mut layout = Layout::default();
        for path in existing {
            let path = path.trim_start_matches("./").trim_matches('/');
            if !path.is_empty() {
                layout.take(path);
            }
        }
        layout
    }

    /// The path for `key`, relative to the sync root; it is then taken.
    pub fn place(&mut self, key: &Key) -> String {
        let hash = Digest::of_canonical(&key.name);
        let mut parts: Vec<String> = Vec::new();
        let mut names: Vec<String> = key.name.split('/').filter(|p| !p.is_empty()).map(component).collect();
        let stem = names.pop().filter(|s| !s.is_empty()).unwrap_or_else(|| UNNAMED.to_owned());
        let kind = Some(component(&key.kind)).filter(|k| !k.is_empty());
        let dirs = [kind.unwrap_or_else(|| UNNAMED.to_owned())].into_iter().chain(names);
        // Folders that have no readable character (`..`, `日本`) are dropped, not renamed: the
        // name is still told apart by the suffix when that makes two paths meet.
        for dir in dirs.filter(|d| !d.is_empty()) {
            // A folder cannot be where a file already is.
            let dir = self.first_free(&dir, &hash, |candidate| {
                let path = join(&parts, candidate);
                !self.files.contains(&path.to_lowercase())
            });
            parts.push(dir);
        }
        let stem = self.first_free(&stem, &hash, |candidate| {
            let path = format!("{}.yaml", join(&parts, candidate)).to_lowercase();
            !self.files.contains(&path) && !self.dirs.contains(&path)
        });
        parts.push(format!("{stem}.yaml"));
        let path = parts.join("/");
        self.take(&path);
        path
    }
}

/// The default path of `key` (contract part 2, "Where files go") when nothing collides with it:
/// where [`Layout::place`] puts the key in an empty sync root. A base's blob proof (contract
/// v1.2) holds only for a file at this path.
pub fn default_path(key: &Key) -> String {
    let mut names: Vec<String> = key.name.split('/').filter(|p| !p.is_empty()).map(component).collect();
    let stem = names.pop().filter(|s| !s.is_empty()).unwrap_or_else(|| UNNAMED.to_owned());
    let mut path = Some(component(&key.kind)).filter(|k| !k.is_empty()).unwrap_or_else(|| UNNAMED.to_owned());
    for dir in names.iter().filter(|d| !d.is_empty()) {
        path.push('/');
        path.push_str(dir);
    }
    path.push('/');
    path.push_str(&stem);
    path.push_str(".yaml");
    path
}

impl Layout {
    /// `base` if `free`, else `base` with the shortest digest suffix that is.
    fn first_free(&self, base: &str, hash: &Digest, free: impl Fn(&str) -> bool) -> String {
        if free(base) {
            return base.to_owned();
        }
        for len in (8..=64).step_by(4) {
            let candidate = with_suffix(base, &hash.short(len));
            if free(&candidate) {
                return candidate;
            }
        }
        // Only reachable when someone planted files named after the full digest.
        (2u64..)
            .map(|n| with_suffix(base, &format!("{}-{n}", hash.short(8))))
            .find(|c| free(c))
            .expect("an unbounded counter finds a free name")
    }

    fn take(&mut self, path: &str) {
        let lower = path.to_lowercase();
        let mut end = 0;
        while let Some(i) = lower[end..].find('/') {
            end += i;
            self.dirs.insert(lower[..end].to_owned());
            end += 1;
        }
        self.files.insert(lower);
    }
}

fn join(parts: &[String], last: &str) -> String {
    let mut path = String::new();
    for p in parts {
        path.push_str(p);
        path.push('/');
    }
    path.push_str(last);
    path
}

/// `base-suffix`, shortening `base` so the whole stays within [`MAX_COMPONENT`].
fn with_suffix(base: &str, suffix: &str) -> String {
    let keep = MAX_COMPONENT.saturating_sub(suffix.len() + 1);
    let base = base[..base.len().min(keep)].trim_end_matches('-');
    if base.is_empty() { suffix.to_owned() } else { format!("{base}-{suffix}") }
}

/// One readable, portable path component: lower-case ASCII letters, digits and `-`, at most
/// [`MAX_COMPONENT`] long, never a name Windows reserves. Empty when nothing readable is left.
pub fn component(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_COMPONENT));
    let mut gap = false;
    for c in raw.chars().flat_map(char::to_lowercase) {
        let text = match c {
            'a'..='z' | '0'..='9' => None,
            c => Some(transliterate(c)),
        };
        match text {
            None => {
                if gap && !out.is_empty() {
                    out.push('-');
                }
                gap = false;
                out.push(c);
            }
            Some(Some(ascii)) => {
                if gap && !out.is_empty() {
                    out.push('-');
                }
                gap = false;
                out.push_str(ascii);
            }
            Some(None) => gap = true,
        }
        if out.len() >= MAX_COMPONENT {
            break;
        }
    }
    out.truncate(MAX_COMPONENT);
    let trimmed = out.trim_end_matches('-');
    let mut out = trimmed.to_owned();
    if is_windows_reserved(&out) {
        out.push('-');
    }
    out
}

/// Windows refuses these as file or folder names, whatever the extension.
fn is_windows_reserved(s: &str) -> bool {
    match s.as_bytes() {
        b"con" | b"prn" | b"aux" | b"nul" => true,
        [b'c', b'o', b'm', d] | [b'l', b'p', b't', d] => d.is_ascii_digit(),
        _ => false,
    }
}

/// ASCII for common Latin letters, so that `Grüße` reads as `grusse` rather than `gr-e`.
fn transliterate(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => "s",
        'ß' => "ss",
        'ţ' | 'ť' | 'ŧ' | 'ț' => "t",
        'þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        assert_eq!(component("Slack / Notify"), "slack-notify");
        assert_eq!(component("Grüße, Welt!"), "grusse-welt");
        assert_eq!(component("..."), "");
        assert_eq!(component("CON"), "con-");
        assert_eq!(component("com1"), "com1-");
        assert_eq!(component("nul.txt"), "nul-txt");
        assert_eq!(component("a\0b"), "a-b");
        assert_eq!(component(&"x".repeat(300)).len(), MAX_COMPONENT);
        assert_eq!(component(&format!("{}-y", "x".repeat(79))), "x".repeat(79));
    }

    #[test]
    fn places() {
        let mut layout = Layout::new(["workflow/taken.yaml", "workflow/file", "./other/x.yml"]);
        let place = |l: &mut Layout, name: &str| l.place(&Key::new("workflow", name));
        assert_eq!(place(&mut layout, "A b"), "workflow/a-b.yaml");
        let second = place(&mut layout, "a B");
        assert!(second.starts_with("workflow/a-b-") && second.len() == "workflow/a-b-12345678.yaml".len());
        assert!(place(&mut layout, "Taken").starts_with("workflow/taken-"));
        assert!(place(&mut layout, "file/y").starts_with("workflow/file-"));
        assert_eq!(place(&mut layout, "../../etc/passwd"), "workflow/etc/passwd.yaml");
        assert_eq!(place(&mut layout, "日本"), "workflow/unnamed.yaml");
    }

    /// A blob proof is checked at `default_path`, so it must be where `place` puts a key when
    /// nothing is in the way.
    #[test]
    fn default_path_is_where_an_empty_layout_places() {
        for (kind, name) in [
            ("workflow", "A b"),
            ("workflow", "../../etc/passwd"),
            ("workflow", "日本"),
            ("connection", "crm/日本/Grüße"),
            ("x", "a//b/"),
            ("workflow", "CON"),
            ("k", &"y".repeat(200)),
        ] {
            let key = Key::new(kind, name);
            assert_eq!(default_path(&key), Layout::default().place(&key), "{key}");
        }
    }
}
