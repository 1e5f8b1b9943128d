//! The file-descriptor operations storage is built of: opening beneath a directory without
//! following symlinks, creating and unlinking names in a directory, linking an `O_TMPFILE`,
//! reserving space.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{self, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// Take ownership of an fd a syscall just returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller got `fd` from a successful open and hands it over; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `openat(dirfd, path, flags)` (a plain open, following symlinks: for StoreDir itself).
pub fn open_at(dirfd: Option<RawFd>, path: &Path, flags: OFlag, mode: u32) -> std::result::Result<OwnedFd, Errno> {
    fcntl::openat(dirfd, path, flags | OFlag::O_CLOEXEC, Mode::from_bits_truncate(mode)).map(owned)
}

pub fn open_dir(dirfd: Option<RawFd>, path: &Path) -> io::Result<OwnedFd> {
    Ok(open_at(dirfd, path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?)
}

/// openat2 confined to `dirfd`: no `..` escape, no symlink anywhere on the way.
pub fn open_beneath(dirfd: RawFd, path: &str, flags: OFlag, mode: Mode) -> std::result::Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    fcntl::openat2(dirfd, path, how).map(owned)
}

/// Create `name` in `dirfd` for writing; EEXIST if it is there already.
pub fn create_in(dirfd: RawFd, name: &str, mode: u32) -> std::result::Result<OwnedFd, Errno> {
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY;
    open_at(Some(dirfd), Path::new(name), flags, mode)
}

/// Remove the file `name` from `dirfd`.
pub fn unlink_in(dirfd: RawFd, name: &str) -> std::result::Result<(), Errno> {
    nix::unistd::unlinkat(Some(dirfd), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
}

/// Whether `linkat(fd, "", …, AT_EMPTY_PATH)` may name an O_TMPFILE here: 0 not tried yet,
/// 1 yes, 2 no. Linux allows it to holders of CAP_DAC_READ_SEARCH, and since 6.10 to the
/// credentials that opened the file; elsewhere the link goes through /proc/self/fd, a path walk
/// through procfs that costs a third of the call (docs/benchmarks.md, "A write without the
/// ring's helper").
static FLINK: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Give an O_TMPFILE a name; EEXIST if the name is taken (never replaces).
pub fn link_tmpfile(fd: RawFd, dirfd: RawFd, name: &str) -> std::result::Result<(), Errno> {
    use std::sync::atomic::Ordering::Relaxed;
    if FLINK.load(Relaxed) != 2 {
        match nix::unistd::linkat(Some(fd), "", Some(dirfd), name, fcntl::AtFlags::AT_EMPTY_PATH) {
            Err(Errno::ENOENT | Errno::EPERM) => {}
            linked => {
                FLINK.store(1, Relaxed);
                return linked;
            }
        }
    }
    let proc_path = format!("/proc/self/fd/{fd}");
    let linked = nix::unistd::linkat(
        None,
        proc_path.as_str(),
        Some(dirfd),
        name,
        fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    );
    // The same name linked through /proc where the empty path was refused: the refusal was
    // the kernel's rule, not a missing directory.
    if linked.is_ok() && FLINK.load(Relaxed) == 0 {
        FLINK.store(2, Relaxed);
    }
    linked
}

/// Reserve `size` bytes for a file: 507 now rather than ENOSPC in the middle of the body.
/// A filesystem that cannot preallocate goes on without.
pub fn preallocate(fd: RawFd, size: u64) -> Result<()> {
    let len = i64::try_from(size).map_err(|_| Error::InsufficientStorage)?;
    match fcntl::fallocate(fd, fcntl::FallocateFlags::empty(), 0, len) {
        Ok(()) | Err(Errno::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(Error::storage(e.into())),
    }
}

/// The kernel's name of block device `dev` ("vda1", "loop0", "dm-0"): the one /proc/fs/jbd2
/// and /sys/fs/ext4 use. It is in the device's uevent under /sys/dev/block.
pub fn block_device_name(dev: libc::dev_t) -> Option<String> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(str::to_owned)
}
