package io.fleetstream.hadoop;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.attribute.PosixFilePermissions;
import org.apache.hadoop.fs.FSLinkResolver;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.permission.FsPermission;

/**
 * Hadoop's local file system without the processes it starts when its native library (libhadoop,
 * not shipped with Spark) is absent: a {@code chmod} for every file it creates and two
 * {@code readlink} for every rename through a FileContext (Delta's commits). Here both are Java's
 * own file calls, with the same results. A quiet fleet's lake made about 480 such processes a
 * minute (docs/benchmarks.md, session 59).
 */
public class NoForkRawLocalFileSystem extends RawLocalFileSystem {

  /** The same mode as Hadoop's {@code chmod}; a sticky bit (which Java cannot set) still goes to it. */
  @Override
  public void setPermission(Path p, FsPermission permission) throws IOException {
    if (permission.getStickyBit()) {
      super.setPermission(p, permission);
      return;
    }
    String mode = permission.getUserAction().SYMBOL + permission.getGroupAction().SYMBOL
        + permission.getOtherAction().SYMBOL;
    try {
      Files.setPosixFilePermissions(pathToFile(p).toPath(), PosixFilePermissions.fromString(mode));
    } catch (NoSuchFileException e) {
      throw new FileNotFoundException("File " + p + " does not exist");
    }
  }

  /** As Hadoop's, with the link read by Java instead of a {@code readlink} process. */
  @Override
  public FileStatus getFileLinkStatus(Path f) throws IOException {
    FileStatus status = linkStatus(f);
    if (status.isSymlink()) {
      status.setSymlink(FSLinkResolver.qualifySymlinkTarget(getUri(), status.getPath(), status.getSymlink()));
    }
    return status;
  }

  @Override
  public Path getLinkTarget(Path f) throws IOException {
    return linkStatus(f).getSymlink();
  }

  /** Hadoop's {@code deprecatedGetFileLinkStatusInternal}, the link's target read by Java. */
  private FileStatus linkStatus(Path f) throws IOException {
    java.nio.file.Path file = pathToFile(f).toPath();
    String target = Files.isSymbolicLink(file) ? Files.readSymbolicLink(file).toString() : "";
    try {
      FileStatus status = getFileStatus(f);
      if (target.isEmpty()) {
        return status;
      }
      return new FileStatus(status.getLen(), false, status.getReplication(), status.getBlockSize(),
          status.getModificationTime(), status.getAccessTime(), status.getPermission(), status.getOwner(),
          status.getGroup(), new Path(target), f);
    } catch (FileNotFoundException e) {
      if (!target.isEmpty()) {  // a dangling link
        return new FileStatus(0, false, 0, 0, 0, 0, FsPermission.getDefault(), "", "", new Path(target), f);
      }
      throw e;
    }
  }
}
