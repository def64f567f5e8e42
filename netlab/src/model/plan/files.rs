//! The files a lab writes (its nodes' /etc/netns files): written when their
//! content differs, removed when the lab no longer wants them.

use super::{
    action::{Action, Steps},
    actual::Actual,
    desired::Desired,
};

pub fn remove_unwanted(desired: &Desired, actual: &Actual, steps: &mut Steps) {
    for path in actual.files.keys() {
        if !desired.files.contains_key(path) {
            steps.del.push(Action::RemoveFile { path: path.clone() });
        }
    }
}

pub fn write(desired: &Desired, actual: &Actual, steps: &mut Steps) {
    for (path, content) in &desired.files {
        if actual.files.get(path) != Some(content) {
            steps.add.push(Action::WriteFile {
                path: path.clone(),
                content: content.clone(),
            });
        }
    }
}
