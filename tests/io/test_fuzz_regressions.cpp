// Every input the fuzzers (fuzz/, scripts/fuzz) found a fault with, committed under
// fuzz/regressions/<harness>/ and run here in the ordinary builds through the same reader as its
// harness: each must now be refused with a frugal::Error naming the file, or decode. Under
// scripts/sanitize these also run with AddressSanitizer and LeakSanitizer.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "frugal/data/image.h"
#include "frugal/error.h"
#include "frugal/io/weights.h"
#include "io/checkpoint_io.h"
#include "io/pickle_scan.h"
#include "test_support.h"
#include "torch_archive.h"

namespace {

const std::string kDir = FRUGAL_FUZZ_REGRESSIONS_DIR;

std::vector<uint8_t> bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The error of opening `path` as a checkpoint without its checksum, as the harness does.
std::string unverified_checkpoint_error(const std::string& path) {
  return frugal::testing::error_message(
      [&] { frugal::detail::open_checkpoint(path, c10::Device(c10::kCPU), /*verify=*/false); });
}

using ::testing::IsSubstring;

// fuzz_torch_state_dict: a torch.save archive whose record data/6 has a broken local header.
// PyTorchStreamReader::getRecord threw c10::Error, which escaped read_torch_state_dict.
TEST(FuzzRegressions, TorchSaveRecordWithBrokenHeaderIsAFrugalError) {
  const std::string path = kDir + "/torch_state_dict/crash-record-header.pt";
  EXPECT_PRED_FORMAT2(IsSubstring,
                      "read_torch_state_dict: '" + path +
                          "' is not a readable torch.save zip archive (PytorchStreamReader failed "
                          "reading file data/6",
                      frugal::testing::error_message([&] { frugal::read_torch_state_dict(path); }));
}

// fuzz_checkpoint: a damaged archive opened without the checksum (as a checkpoint written before
// checksums is); LibTorch refuses it and leaks miniz's state (scripts/lsan.supp says why). With
// the checksum, frugal refuses it first.
TEST(FuzzRegressions, DamagedCheckpointIsRefusedWithAndWithoutChecksum) {
  const std::string path = kDir + "/checkpoint/leak-damaged-archive.ckpt";
  for (const bool verify : {false, true}) {
    const std::string message = frugal::testing::error_message(
        [&] { frugal::detail::open_checkpoint(path, c10::Device(c10::kCPU), verify); });
    EXPECT_NE(message.find(path), std::string::npos) << verify << ": " << message;
  }
}

// fuzz_checkpoint: a checkpoint (opened without its checksum) whose data.pkl holds a BINUNICODE
// of 788,529,160 bytes: LibTorch's unpickler reserved that much (and one) before reading. frugal
// checks the pickle's lengths first (io/pickle_scan.h) and allocates nothing.
TEST(FuzzRegressions, PickleLengthPastItsEndIsRefusedBeforeLibTorchReadsIt) {
  const std::string path = kDir + "/checkpoint/oom-pickle-length.ckpt";
  EXPECT_PRED_FORMAT2(IsSubstring,
                      "cannot read checkpoint " + path +
                          ": the file is truncated, corrupt or not a LibTorch archive (data.pkl: "
                          "opcode 0x58 at byte 2307 claims 788529160 bytes, 361 remain)",
                      unverified_checkpoint_error(path));
}

// fuzz_checkpoint, again: the same in the trainer state, a pickle_save archive packed into the
// checkpoint as a tensor (LibTorch reserved 1.3 GB).
TEST(FuzzRegressions, PickleLengthInTheTrainerStateIsRefusedToo) {
  const std::string path = kDir + "/checkpoint/oom-trainer-state-length.ckpt";
  EXPECT_PRED_FORMAT2(IsSubstring,
                      "checkpoint " + path +
                          ": its trainer state cannot be read (its pickle is damaged: data.pkl: "
                          "opcode 0x58 at byte",
                      unverified_checkpoint_error(path));
}

// fuzz_checkpoint, a third time: a LONG_BINPUT index of 0x656e6961 (bytes of "trainer_state"
// mutated into the pickle) made LibTorch size its memo table for it: 27 GB.
TEST(FuzzRegressions, MemoIndexFarPastTheMemoIsRefused) {
  const std::string path = kDir + "/checkpoint/crash-memo-index.ckpt";
  const std::string message = unverified_checkpoint_error(path);
  EXPECT_PRED_FORMAT2(IsSubstring, path, message);
  EXPECT_PRED_FORMAT2(IsSubstring, "memo index 1701734753 at byte", message);
}

TEST(FuzzRegressions, PickleLengthCheckWalksEveryOpcodeKind) {
  using frugal::detail::pickle_bounds_problem;
  // PROTO 2, EMPTY_DICT, SHORT_BINUNICODE "ab", BININT1 7, SETITEM, GLOBAL "m\nn\n", POP, STOP
  const std::string good(
      "\x80\x02}\x8c\x02"
      "abK\x07sc"
      "m\nn\n0.",
      17);
  EXPECT_EQ(pickle_bounds_problem(good.data(), good.size()), "");
  const std::string long_string(
      "\x80\x02X\xff\xff\xff\x00"
      "ab.",
      10);
  EXPECT_EQ(pickle_bounds_problem(long_string.data(), long_string.size()),
            "opcode 0x58 at byte 2 claims 16777215 bytes, 3 remain");
  const std::string cut("\x80\x02J\x01", 4);
  EXPECT_EQ(pickle_bounds_problem(cut.data(), cut.size()), "opcode 0x4a at byte 2 is cut short");
  const std::string no_stop("\x80\x02N", 3);
  EXPECT_EQ(pickle_bounds_problem(no_stop.data(), no_stop.size()), "the pickle has no STOP");
  // Memo indices: a put numbers the next value, a get names one already put.
  const std::string memo(
      "\x80\x02}q\x00h\x00"
      "0.",
      9);
  EXPECT_EQ(pickle_bounds_problem(memo.data(), memo.size()), "");
  const std::string far_put("\x80\x02}r\x05\x00\x00\x00.", 9);
  EXPECT_EQ(pickle_bounds_problem(far_put.data(), far_put.size()),
            "memo index 5 at byte 3 with 0 values memoized");
  const std::string early_get("\x80\x02}q\x00h\x01.", 8);
  EXPECT_EQ(pickle_bounds_problem(early_get.data(), early_get.size()),
            "memo index 1 at byte 5 with 1 values memoized");
  const std::string unknown("\x80\x02\xff.", 4);
  EXPECT_EQ(pickle_bounds_problem(unknown.data(), unknown.size()),
            "unknown pickle opcode 0xff at byte 2");
}

// fuzz_torch_pickle: a state dict put into itself as its own key and value (through the memo):
// the reader's shared_ptr graph had a cycle and leaked it (LeakSanitizer, in scripts/sanitize).
TEST(FuzzRegressions, PickledContainerInsideItselfIsRefusedWithoutALeak) {
  const std::vector<uint8_t> pickle = bytes(kDir + "/torch_pickle/leak-container-in-itself.pkl");
  const std::string archive = frugal::fuzz::torch_save_archive(pickle.data(), pickle.size());
  const std::string path = frugal::testing::temp_dir("fuzz_regressions") + "/cycle.pt";
  std::ofstream(path, std::ios::binary) << archive;
  const std::string message =
      frugal::testing::error_message([&] { frugal::read_torch_state_dict(path); });
  EXPECT_NE(message.find("read_torch_state_dict: '" + path + "'"), std::string::npos) << message;
}

// fuzz_png: a PNG header claiming 3941264106 x 3941264106 pixels overflowed the signed product in
// the pixel limit's own check (UBSan).
TEST(FuzzRegressions, HugePngSizeIsRefusedWithoutOverflow) {
  const std::string path = kDir + "/png/crash-overflowing-size.png";
  const std::vector<uint8_t> data = bytes(path);
  const std::string message = frugal::testing::error_message(
      [&] { frugal::decode_image(data.data(), data.size(), frugal::ColorMode::kRGB, path); });
  EXPECT_NE(message.find("its header claims 3941264106x3941264106 = 15533562753243979236 pixels"),
            std::string::npos)
      << message;
}

// fuzz_jpeg: a 485-byte CMYK JPEG claiming 49925x255 pixels took 1.4 s under ASan and coverage.
// Not a hang: 12.7 Mpx is a legitimate size, so it is decoded, until libjpeg finds the scan data
// broken ("Didn't expect more than one scan"); max_image_pixels() refuses bigger claims before
// allocating.
TEST(FuzzRegressions, LargeCmykJpegIsDecodedOrRefusedByThePixelLimit) {
  const std::string path = kDir + "/jpeg/timeout-cmyk-49925x255.jpg";
  const std::vector<uint8_t> data = bytes(path);
  std::string message = frugal::testing::error_message(
      [&] { frugal::decode_image(data.data(), data.size(), frugal::ColorMode::kRGB, path); });
  EXPECT_NE(message.find("'" + path + "' (JPEG): Didn't expect more than one scan"),
            std::string::npos)
      << message;
  struct Restore {
    int64_t saved = frugal::max_image_pixels();
    ~Restore() { frugal::set_max_image_pixels(saved); }
  } restore;
  frugal::set_max_image_pixels(int64_t{1} << 22);
  message = frugal::testing::error_message(
      [&] { frugal::decode_image(data.data(), data.size(), frugal::ColorMode::kRGB, path); });
  EXPECT_NE(message.find("its header claims 49925x255 = 12730875 pixels"), std::string::npos)
      << message;
}

}  // namespace
