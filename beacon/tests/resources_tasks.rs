//! Runtime tasks return to baseline after beacons are dropped, from an
//! ordinary thread and from a runtime thread (alone in its test binary).

mod common;

use std::time::Duration;

use beacon::Beacon;
use common::{open_fds, wait_for};

fn start(port: u16) -> (Beacon, beacon::BeaconController) {
    Beacon::builder(port)
        .data("task")
        .period(Duration::from_millis(100))
        .interfaces(["lo"])
        .build()
        .unwrap()
}

/// The number of threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .count()
}

#[test]
fn tasks_back_to_baseline_after_drop() {
    drop(start(21501));
    // The runtime finishes releasing a task just after its end is reported.
    let baseline = wait_for("warm-up task released", || {
        let n = crust_runtime::alive_tasks();
        (n == 0).then_some(n)
    });
    let fd_baseline = open_fds();

    let threads_before = threads();
    let beacons: Vec<_> = (0..5).map(|_| start(21501)).collect();
    assert_eq!(
        crust_runtime::alive_tasks(),
        baseline + 5,
        "one task per beacon"
    );
    assert_eq!(threads(), threads_before, "no thread per beacon");
    drop(beacons);
    wait_for(
        "tasks back to baseline after drop on a plain thread",
        || (crust_runtime::alive_tasks() == baseline).then_some(()),
    );
    assert_eq!(open_fds(), fd_baseline);

    // Dropped inside a runtime task: it must not block there, and the task
    // and sockets are gone soon after.
    let beacons: Vec<_> = (0..5).map(|_| start(21501)).collect();
    let ctl: Vec<_> = beacons.iter().map(|(_, c)| c.clone()).collect();
    crust_runtime::block_on(async move {
        tokio::spawn(async move { drop(beacons) }).await.unwrap();
    })
    .unwrap();
    wait_for(
        "tasks back to baseline after drop on a runtime thread",
        || (crust_runtime::alive_tasks() == baseline).then_some(()),
    );
    wait_for(
        "fds back to baseline after drop on a runtime thread",
        || (open_fds() == fd_baseline).then_some(()),
    );
    assert!(ctl.iter().all(|c| !c.is_running()));
}
