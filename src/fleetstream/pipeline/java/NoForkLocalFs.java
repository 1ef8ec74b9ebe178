package io.fleetstream.hadoop;

import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.ChecksumFs;
import org.apache.hadoop.fs.DelegateToFileSystem;
import org.apache.hadoop.fs.FsConstants;

/**
 * What a FileContext uses for {@code file:} ({@code fs.AbstractFileSystem.file.impl}): Hadoop's
 * {@code LocalFs}, checksummed, over {@link NoForkRawLocalFileSystem}.
 */
public class NoForkLocalFs extends ChecksumFs {
  public NoForkLocalFs(URI uri, Configuration conf) throws IOException, URISyntaxException {
    super(new Raw(uri, conf));
  }

  /** Hadoop's {@code RawLocalFs} (whose constructors are not public) over the file system above. */
  public static class Raw extends DelegateToFileSystem {
    public Raw(URI uri, Configuration conf) throws IOException, URISyntaxException {
      super(uri, new NoForkRawLocalFileSystem(), conf, FsConstants.LOCAL_FS_URI.getScheme(), false);
    }

    @Override
    public int getUriDefaultPort() {
      return -1;  // (as RawLocalFs: no port)
    }

    @Override
    public boolean isValidName(String src) {
      return true;  // (as RawLocalFs: local file systems differ in what they accept; none is checked here)
    }
  }
}
