//! The files a lab writes (its nodes' /etc/netns files): written when their
//! content differs, removed when the lab no longer wants them.

use super::{
    action::{Action, Op, Steps},
    actual::Actual,
    desired::Desired,
};

pub fn remove_unwanted(desired: &Desired, actual: &Actual, steps: &mut Steps) {
    for path in actual.files.keys() {
        if !desired.files.contains_key(path) {
            steps
                .del
                .push(Action::on_host(Op::RemoveFile { path: path.clone() }));
        }
    }
}

pub fn write(desired: &Desired, actual: &Actual, steps: &mut Steps) {
    for (path, content) in &desired.files {
        if actual.files.get(path) != Some(content) {
            steps.add.push(Action::on_host(Op::WriteFile {
                path: path.clone(),
                content: content.clone(),
            }));
        }
    }
}
